"""The Kimi k1.5 / K2 policy loss and the log-probabilities it needs.

For a prompt with K samples y_i drawn from the iteration's starting policy pi_old,

    L = (1/K) sum_i (r_i - rbar - tau * Delta_i)^2 / (2 tau),    Delta_i = sum_t log pi(y_i,t) - log pi_old(y_i,t),

with rbar the mean reward of the K samples *including* y_i (K2 §3.2; not verl's leave-one-out RLOO) and
Delta_i a sequence-level sum over response tokens only. The 1/(2 tau) factor is ours: it makes the
gradient exactly minus k1.5's eq. 3, (1/K) sum_i [grad log pi(y_i) (r_i - rbar) - (tau/2) grad Delta_i^2],
so at theta = theta_old the step is mean-baseline REINFORCE whatever tau is, and tau only sets how
strongly later inner steps are pulled back toward pi_old (a trust region).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def group_advantages(rewards: Tensor) -> Tensor:
    """r_i - rbar per group; `rewards` is (groups, K) and the mean includes the sample itself."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def k15_terms(logp: Tensor, old_logp: Tensor, advantages: Tensor, tau: float) -> Tensor:
    """Per-sample (A_i - tau * Delta_i)^2 / (2 tau) for sequence log-probs of any matching shape."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (it is the KL trust-region strength), got {tau}")
    return (advantages - tau * (logp - old_logp)).pow(2) / (2 * tau)


def k15_loss(logp: Tensor, old_logp: Tensor, rewards: Tensor, tau: float) -> Tensor:
    """Mean over groups and samples of the k1.5 squared loss; all inputs are (groups, K)."""
    return k15_terms(logp, old_logp, group_advantages(rewards), tau).mean()


def token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """log pi(x_t | x_<t) for t >= 1, shape (B, T-1), in fp32."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return -nll.view_as(targets)


def sequence_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor) -> Tensor:
    """Sum of token log-probs over the positions flagged in `response_mask` (B, T); shape (B,)."""
    per_token = token_logprobs(model, input_ids, attention_mask)
    return (per_token * response_mask[:, 1:].to(per_token.dtype)).sum(dim=1)


def masked_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood over the positions flagged in `loss_mask` (the PTX loss)."""
    per_token = token_logprobs(model, input_ids, attention_mask)
    mask = loss_mask[:, 1:].to(per_token.dtype)
    return -(per_token * mask).sum() / mask.sum().clamp(min=1.0)


__all__ = [
    "group_advantages",
    "k15_loss",
    "k15_terms",
    "masked_nll",
    "sequence_logprobs",
    "token_logprobs",
]
