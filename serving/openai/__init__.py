"""The OpenAI-compatible HTTP API of `trimtab serve`: chat completions, completions, models, and
feedback on what was served, over the same request path as the gRPC InferenceService."""
