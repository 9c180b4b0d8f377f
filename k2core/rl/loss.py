"""The Kimi k1.5 / K2 policy loss and the log-probabilities it needs.

For a prompt with K samples y_i drawn from the iteration's starting policy pi_old,

    L = (1/K) sum_i (r_i - rbar - tau * Delta_i)^2 / (2 tau),    Delta_i = sum_t log pi(y_i,t) - log pi_old(y_i,t),

with rbar the mean reward of the K samples *including* y_i (K2 §3.2; not verl's leave-one-out RLOO) and
Delta_i a sequence-level sum over response tokens only. The 1/(2 tau) factor is ours: it makes the
gradient exactly minus k1.5's eq. 3, (1/K) sum_i [grad log pi(y_i) (r_i - rbar) - (tau/2) grad Delta_i^2],
so at theta = theta_old the step is mean-baseline REINFORCE whatever tau is, and tau only sets how
strongly later inner steps are pulled back toward pi_old (a trust region). The factor does not move the minimiser,
and Muon's orthogonalised update is blind to a constant scale of the gradient.

pi is the *sampling* distribution (token_logprobs): softmax(logits / temperature), cut to the top-p nucleus and
renormalised when top_p < 1, exactly the distribution the KV-cache sampler drew from (its nucleus rule,
k2core.model.generate.nucleus_mask), so pi_old is the probability the sample actually had. The sampled token is
always kept in the nucleus: it is in pi_old's by construction (float noise between the cached decode and the full
forward could otherwise drop a boundary token), and when later inner steps push it out of pi_theta's nucleus, the
exact top-p log-prob would be -inf and the loss infinite; keeping it gives the renormalised probability instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from k2core.model.generate import nucleus_mask


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


def sampling_log_softmax(logits: Tensor, targets: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Log-probs [..., V] (fp32) of the sampler's distribution at `temperature` and `top_p` (module docstring);
    `targets` [...] are the sampled tokens, never cut from the nucleus. Outside the nucleus: -inf."""
    if temperature <= 0:
        raise ValueError(f"log-probs need a sampling temperature > 0 (0 is greedy decoding), got {temperature}")
    scaled = logits.float() / temperature
    if top_p < 1.0:
        with torch.no_grad():
            keep = nucleus_mask(torch.softmax(scaled, dim=-1), top_p)
            keep.scatter_(-1, targets.unsqueeze(-1), True)
        scaled = scaled.masked_fill(~keep, float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, temperature: float = 1.0,
                   top_p: float = 1.0, entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """log pi(x_t | x_<t) for t >= 1, shape (B, T-1), in fp32, under the sampling distribution; with `entropy`
    also that distribution's entropy at each position (B, T-1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    logp_all = sampling_log_softmax(logits, targets, temperature, top_p)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return logp
    probs = logp_all.exp()
    return logp, -(probs * logp_all.masked_fill(probs == 0, 0.0)).sum(dim=-1)


def sequence_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                      temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Sum of token log-probs over the positions flagged in `response_mask` (B, T); shape (B,)."""
    per_token = token_logprobs(model, input_ids, attention_mask, temperature, top_p)
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
    "sampling_log_softmax",
    "sequence_logprobs",
    "token_logprobs",
]
