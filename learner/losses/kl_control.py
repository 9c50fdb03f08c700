"""The coefficient beta of RLHF's KL penalty, fixed or adapted towards a target KL (Ziegler et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass, replace

# The bound on Ziegler et al.'s proportional error e_t: beta moves by at most 20% of K_beta per update.
PROPORTIONAL_ERROR_LIMIT = 0.2


@dataclass(frozen=True)
class KLController:
    """beta and what adapts it; a frozen record, checkpointed as `dataclasses.asdict`.

    `target` None is the fixed controller (beta never changes); otherwise the adaptive one. `target` is
    KL_target in nats per sequence (Ziegler et al. used 6 to 10), `horizon` H in samples (theirs 10,000).
    """

    kl_coef: float
    target: float | None = None
    horizon: int = 10_000

    def __post_init__(self) -> None:
        if self.kl_coef < 0 or (self.target is not None and self.target <= 0) or self.horizon <= 0:
            raise ValueError(f"need kl_coef >= 0, target > 0 or None, horizon > 0; got {self}")


def update_kl_controller(controller: KLController, *, observed_kl: float, n_steps: int) -> KLController:
    """The adaptive KL controller of Ziegler et al. 2019 (arXiv:1909.08593, section 2.2):

        e_t = clip((KL_t - KL_target) / KL_target, -0.2, 0.2)
        beta_{t+1} = beta_t (1 + K_beta e_t),      K_beta = n_steps / H

    `observed_kl` is KL_t, the mean over the step's rollouts of each sequence's summed KL (for example
    `per_token_kl`'s kl_per_sequence metric); `n_steps` the number of rollouts it was measured on. Returns the
    next controller; `controller` is unchanged, and a fixed one is returned as it is. The paper states a
    constant K_beta = 0.1; its code (lm-human-preferences' `AdaptiveKLController`, which earlier TRL and
    verl copy) uses n_steps / H, and so do we.
    """
    if controller.target is None:
        return controller
    error = min(max(observed_kl / controller.target - 1, -PROPORTIONAL_ERROR_LIMIT), PROPORTIONAL_ERROR_LIMIT)
    return replace(controller, kl_coef=controller.kl_coef * (1 + error * n_steps / controller.horizon))
