"""trimtab: align a language model while it serves.

This package is the shared core the components (serving/, feedback/, learner/, guardrails/) build on:
configuration, the wire schema's generated code (`trimtab.v1`) and events, the model registry,
telemetry, records, auth, ids and the evaluation-suite contract (`trimtab.suite`). It imports no
component. Two subpackages sit above the components instead: `trimtab.app` (the CLI, the demo, the
local stack) and `trimtab.simulation` (the synthetic world, a plug-in for the demo, tests and benches).
"""
