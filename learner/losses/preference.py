"""Pairwise preference losses on sequence log-probabilities: DPO (with cDPO label smoothing), IPO, SimPO, ORPO.

Each takes the `PairLogps` of B preference pairs (chosen y_w preferred to rejected y_l for prompt x)
and keyword hyper-parameters, and returns `(loss, metrics)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learner.losses.common import Metrics, example_mean


@dataclass(frozen=True)
class PairLogps:
    """Log-probabilities of B preference pairs; every tensor has shape (B,).

    `policy_*` are sum_t log pi_theta(y_t | x, y_<t) over the response tokens (carrying gradient);
    `reference_*` the same sums under the frozen reference pi_ref (None where a loss needs no reference);
    `*_tokens` the response lengths |y| (float counts).
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    reference_chosen: torch.Tensor | None = None
    reference_rejected: torch.Tensor | None = None
    weights: torch.Tensor | None = None  # per-pair weights w_i (learner.losses.common.example_mean); None: 1

    @classmethod
    def from_token_logps(
        cls,
        token_logps: torch.Tensor,
        loss_mask: torch.Tensor,
        reference_logps: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> PairLogps:
        """From one forward pass over the stacked batch [chosen_1..chosen_B, rejected_1..rejected_B]:
        `token_logps` and `loss_mask` of shape (2B, T), `reference_logps` (2B,) already summed, or None."""
        chosen_logps, rejected_logps = (token_logps * loss_mask).sum(-1).chunk(2)
        chosen_tokens, rejected_tokens = loss_mask.sum(-1).chunk(2)
        reference_chosen, reference_rejected = (None, None) if reference_logps is None else reference_logps.chunk(2)
        return cls(
            chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, reference_chosen, reference_rejected, weights
        )

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_theta(y|x) - log pi_ref(y|x) for chosen and rejected; no gradient reaches the reference."""
        if self.reference_chosen is None or self.reference_rejected is None:
            raise ValueError("this loss needs the reference log-probs (PairLogps.reference_chosen/_rejected)")
        return (
            self.policy_chosen - self.reference_chosen.detach(),
            self.policy_rejected - self.reference_rejected.detach(),
        )


def dpo_loss(pairs: PairLogps, *, beta: float, label_smoothing: float = 0.0) -> tuple[torch.Tensor, Metrics]:
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290, eq. 7), with cDPO label smoothing:

        h = log pi_theta(y_w|x) / pi_ref(y_w|x) - log pi_theta(y_l|x) / pi_ref(y_l|x)
        L_DPO = -E[ (1 - eps) log sigma(beta h) + eps log sigma(-beta h) ]

    eps = `label_smoothing` is the assumed probability that a label is flipped (conservative DPO, Mitchell
    2023); eps = 0 is the paper's loss. Log-probs are summed over response tokens, not length-normalised.
    Note on TRL 1.16: its DPOTrainer smooths labels only in its `robust` loss (Chowdhury et al. 2024,
    a different, debiased form) and `exo_pair`, not in `sigmoid`; the cDPO form here is the one TRL's
    CPOTrainer.cpo_loss (loss_type="sigmoid") computes, which the tests compare against.
    Metrics' rewards are the paper's implicit rewards beta * log pi_theta(y|x) / pi_ref(y|x).
    """
    chosen_logratios, rejected_logratios = pairs.logratios()
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    loss = example_mean(losses, pairs.weights)
    return loss, _reward_metrics(loss, beta * chosen_logratios, beta * rejected_logratios)


def ipo_loss(pairs: PairLogps, *, tau: float) -> tuple[torch.Tensor, Metrics]:
    """Identity Preference Optimisation (Azar et al. 2023, arXiv:2310.12036, eq. 17), length-normalised:

        h = (log pi_theta(y_w|x) - log pi_ref(y_w|x)) / |y_w| - (log pi_theta(y_l|x) - log pi_ref(y_l|x)) / |y_l|
        L_IPO = E[ (h - 1 / (2 tau))^2 ]

    Deviation from the paper, chosen for parity with TRL: the paper's h uses whole-sequence log-ratios;
    here each is divided by its response length |y|, as TRL's DPOTrainer (loss_type="ipo") does (TRL
    reports the IPO authors confirmed their results used this form). Without it the squared loss grows
    with response length and tau would need retuning per data set. `tau` is TRL's `beta` for IPO.
    Metrics' rewards are the per-token log-ratios, whose margin h the loss regresses onto 1 / (2 tau).
    """
    chosen_logratios, rejected_logratios = pairs.logratios()
    chosen_per_token = chosen_logratios / pairs.chosen_tokens.clamp(min=1.0)
    rejected_per_token = rejected_logratios / pairs.rejected_tokens.clamp(min=1.0)
    loss = example_mean((chosen_per_token - rejected_per_token - 1 / (2 * tau)) ** 2, pairs.weights)
    return loss, _reward_metrics(loss, chosen_per_token, rejected_per_token)


def simpo_loss(pairs: PairLogps, *, beta: float, gamma: float) -> tuple[torch.Tensor, Metrics]:
    """Simple Preference Optimization (Meng et al. 2024, arXiv:2405.14734), reference-free:

        L_SimPO = -E[ log sigma( beta/|y_w| log pi_theta(y_w|x) - beta/|y_l| log pi_theta(y_l|x) - gamma ) ]

    The paper's loss as written; TRL's equivalent is CPOTrainer with loss_type="simpo", cpo_alpha=0,
    label_smoothing=0 (its `simpo_gamma` is gamma). The reference fields of `pairs` are not used.
    Metrics' rewards are the paper's implicit rewards beta/|y| log pi_theta(y|x).
    """
    chosen_rewards = beta * pairs.policy_chosen / pairs.chosen_tokens.clamp(min=1.0)
    rejected_rewards = beta * pairs.policy_rejected / pairs.rejected_tokens.clamp(min=1.0)
    loss = example_mean(-F.logsigmoid(chosen_rewards - rejected_rewards - gamma), pairs.weights)
    return loss, _reward_metrics(loss, chosen_rewards, rejected_rewards)


def orpo_loss(pairs: PairLogps, *, lam: float) -> tuple[torch.Tensor, Metrics]:
    """Odds Ratio Preference Optimization (Hong et al. 2024, arXiv:2403.07691), reference-free:

        P(y|x) = exp( (1/|y|) sum_t log pi_theta(y_t | x, y_<t) )      (per-token geometric mean)
        odds(y|x) = P(y|x) / (1 - P(y|x))
        L_ORPO = L_SFT(y_w) - lam * E[ log sigma( log odds(y_w|x) - log odds(y_l|x) ) ]

    L_SFT is the NLL of the chosen responses' tokens as a token mean over the batch (as `sft_loss`,
    and TRL's ORPOTrainer cross-entropy); the paper writes a mean of per-sequence means. Deviation
    from TRL: TRL's NLL term also counts the prompt tokens, ours only the response tokens (trimtab masks
    the prompt from every loss); with a one-token prompt the two agree, which is how the tests compare
    them. `lam` is TRL's `beta`. The reference fields of `pairs` are not used.
    """
    chosen_mean = pairs.policy_chosen / pairs.chosen_tokens.clamp(min=1.0)
    rejected_mean = pairs.policy_rejected / pairs.rejected_tokens.clamp(min=1.0)
    log_odds_ratio = (chosen_mean - _log1mexp(chosen_mean)) - (rejected_mean - _log1mexp(rejected_mean))
    odds_ratio_term = -F.logsigmoid(log_odds_ratio).mean()
    nll = -pairs.policy_chosen.sum() / pairs.chosen_tokens.sum().clamp(min=1.0)
    loss = nll + lam * odds_ratio_term
    with torch.no_grad():
        metrics = {
            "loss": loss.detach(),
            "nll": nll.detach(),
            "odds_ratio_loss": odds_ratio_term.detach(),
            "log_odds_ratio": log_odds_ratio.detach().mean(),
            "reward_accuracy": (log_odds_ratio > 0).float().mean(),
        }
    return loss, metrics


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (Maechler 2012: switch formulas at -log 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _reward_metrics(loss: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> Metrics:
    with torch.no_grad():
        return {
            "loss": loss.detach(),
            "reward_chosen": chosen_rewards.detach().mean(),
            "reward_rejected": rejected_rewards.detach().mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).detach().mean(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        }
