"""trimtab: align a language model while it serves.

This package holds what the components (serving/, feedback/, learner/) share: configuration, the
wire schema's generated code (`trimtab.v1`), the local stack, telemetry, the synthetic world and the
CLI. Components import trimtab, never each other.
"""
