"""Rollouts for RL: one long-lived vLLM engine in a child process of rank 0, sampling n answers per prompt
with the engine's own (processed) log-probs, and refitted in place after each policy update."""

from learner.rollout.engine import RolloutEngine
from learner.rollout.records import Rollout, Sampling

__all__ = ["Rollout", "RolloutEngine", "Sampling"]
