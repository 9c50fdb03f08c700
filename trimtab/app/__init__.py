"""The composition layer: the `trimtab` command, the demo and the local stack's commands.

It is the one package that imports the components (serving, feedback, learner, guardrails) and the
simulation, to run them; the shared core (`trimtab.config`, `events`, `registry`, `telemetry`,
`records`, `auth`, `ids`, `suite`, ...) imports none of them (tests/test_layering.py checks it).
"""
