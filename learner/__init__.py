"""The learner: alignment algorithms as checked losses, and the training loop that applies them.

SFT is its first algorithm (the default model is built with it); preference and RL algorithms,
FSDP2 sharding and the online loop build on the same pieces.
"""
