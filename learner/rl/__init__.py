"""RL on the policy's own samples: PPO with a critic and a KL penalty (InstructGPT, NeMo-Aligner), GRPO
(group-relative advantages, KL in the loss) and RLOO (leave-one-out baseline), `trimtab learn --algo
ppo|grpo|rloo --prompts F.jsonl --reward R`.

The roles, as the seed separates them: the actor (the policy, trained, FSDP2), the critic (PPO only: a
value head on the reward model's backbone, trained, FSDP2), the reward (a frozen reward model or a scorer
function) and the reference (the starting policy, frozen: with LoRA the base with the adapter off, no
second copy). Rollouts come from one vLLM engine that lives as long as the run (`learner.rollout`) and
is refitted in place after every update. `learner.rl.loop` is the recipe.
"""
