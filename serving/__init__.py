"""The serving tier: gRPC over vLLM's AsyncLLM, a response log, hot-swapped versions."""
