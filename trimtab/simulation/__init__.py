"""The simulation: a synthetic world (prompts, responses, a gold reward), its simulated users and
their feedback, the recipe of the tiny default model trained on it, and the world's evaluation suite.

The demo, the tests and the benchmarks run on it; a deployment never needs it. The product reaches it
only as a plug-in: `suite.kind: world` (the `trimtab.suites` entry point `world`), whose judge is the
world's gold reward. No component imports this package (tests/test_layering.py checks it).
"""
