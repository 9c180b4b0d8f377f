"""Pairwise outcomes -> scalar rubric rewards (the rule K2 leaves unspecified; ours, documented here).

Input: `wins[i][j]`, the (fractional) wins of response i over response j among one prompt's K responses (a tie is
half a win each). Two rules, chosen by `RubricRewardConfig.method`:
- `win_rate`: r_i = sum_j wins[i][j] / sum_j (wins[i][j] + wins[j][i]), the share of its comparisons i won.
- `bradley_terry`: strengths pi from the Bradley-Terry model P(i beats j) = pi_i / (pi_i + pi_j), fitted by
  Hunter's MM iteration pi_i <- (W_i + c) / (sum_j n_ij / (pi_i + pi_j) + 2c / (pi_i + 1)), where the prior adds c
  virtual wins and c virtual losses against a fixed opponent of strength 1. The prior keeps an undefeated response's
  strength finite and the fit unique (the log-likelihood plus prior is strictly concave in log pi), so the
  iteration converges. r_i = the model's mean win probability of i against the other K-1 responses.
Both give r_i in [0, 1]. `scale="centred"` subtracts the prompt's mean reward (the group baseline);
`scale="unit"` keeps [0, 1]. In a complete round robin both rules order responses by their number of wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RubricRewardConfig(BaseModel):
    """How the rubric reward turns a prompt's pairwise outcomes into rewards (a section of the RL config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["bradley_terry", "win_rate"] = "bradley_terry"
    scale: Literal["centred", "unit"] = "centred"
    bt_prior: float = Field(default=0.5, gt=0)  # virtual wins and losses against a strength-1 opponent
    bt_tol: float = Field(default=1e-10, gt=0)  # convergence: max |delta log pi| per iteration
    bt_max_iter: int = Field(default=10_000, ge=1)
    critic_max_tokens: int = Field(default=64, ge=8)


def _check_square(wins: Sequence[Sequence[float]]) -> int:
    k = len(wins)
    if any(len(row) != k for row in wins):
        raise ValueError(f"wins must be a square K x K matrix, got rows of lengths {[len(r) for r in wins]}")
    if any(w < 0 for row in wins for w in row):
        raise ValueError("wins must be non-negative")
    return k


def bradley_terry(wins: Sequence[Sequence[float]], prior: float = 0.5, tol: float = 1e-10,
                  max_iter: int = 10_000) -> list[float]:
    """Bradley-Terry strengths by MM with a prior of `prior` virtual wins and losses against strength 1.

    With `prior == 0` the strengths are only defined up to scale and are returned with geometric mean 1; they exist
    only when every response has won and lost something (the data are strongly connected), else this raises."""
    k = _check_square(wins)
    won = [sum(wins[i][j] for j in range(k) if j != i) for i in range(k)]
    games = [[wins[i][j] + wins[j][i] if i != j else 0.0 for j in range(k)] for i in range(k)]
    pi = [1.0] * k
    for _ in range(max_iter):
        new = []
        for i in range(k):
            denominator = sum(games[i][j] / (pi[i] + pi[j]) for j in range(k) if games[i][j]) \
                + 2 * prior / (pi[i] + 1.0)
            if won[i] + prior == 0 or denominator == 0:
                raise ValueError(f"Bradley-Terry has no finite fit: response {i} never won or never played; "
                                 "use a prior > 0")
            new.append((won[i] + prior) / denominator)
        if prior == 0:
            scale = math.exp(sum(math.log(p) for p in new) / k)
            new = [p / scale for p in new]
        change = max(abs(math.log(a) - math.log(b)) for a, b in zip(new, pi))
        pi = new
        if change < tol:
            return pi
    raise ValueError(f"Bradley-Terry did not converge in {max_iter} iterations (a response that never lost needs "
                     "a prior > 0)")


def bt_win_probabilities(strengths: Sequence[float]) -> list[float]:
    """Each response's mean Bradley-Terry win probability against the others."""
    k = len(strengths)
    return [sum(strengths[i] / (strengths[i] + strengths[j]) for j in range(k) if j != i) / (k - 1)
            for i in range(k)]


def win_rates(wins: Sequence[Sequence[float]]) -> list[float]:
    """Share of its comparisons each response won (0.5 for a response with no comparisons)."""
    k = _check_square(wins)
    rates = []
    for i in range(k):
        played = sum(wins[i][j] + wins[j][i] for j in range(k) if j != i)
        rates.append(sum(wins[i][j] for j in range(k) if j != i) / played if played else 0.5)
    return rates


def rubric_rewards(wins: Sequence[Sequence[float]], config: RubricRewardConfig) -> list[float]:
    """One prompt's rewards from its pairwise outcomes, by the configured rule and scale."""
    if len(wins) < 2:
        raise ValueError("rubric rewards need at least 2 responses per prompt")
    if config.method == "win_rate":
        rewards = win_rates(wins)
    else:
        rewards = bt_win_probabilities(bradley_terry(wins, config.bt_prior, config.bt_tol, config.bt_max_iter))
    if config.scale == "centred":
        mean = sum(rewards) / len(rewards)
        rewards = [r - mean for r in rewards]
    return rewards
