"""K2's "moderate difficulty" prompt filter: keep the prompts the policy sometimes, but not always, solves.

A prompt that the policy (the SFT model, in K2) solves in all K samples or in none gives the k1.5/K2 loss no
signal (every advantage r - mean(r) is 0), so such prompts are dropped before RL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from k2core.rl.gym.core import Domain, GymError, Message, Sample

# Any policy: the prompt messages and K -> K responses (a local model, a served checkpoint, a fake in tests).
Sampler = Callable[[list[Message], int], list[str]]


@dataclasses.dataclass(frozen=True)
class Rated:
    sample: Sample
    pass_rate: float  # share of the K responses that the verifier rewarded (reward >= pass_threshold)
    rewards: tuple[float, ...]


def rate(domain: Domain, samples: Iterable[Sample], sampler: Sampler, k: int,
         pass_threshold: float = 1.0) -> list[Rated]:
    """Each sample's pass rate over `k` responses of `sampler`, scored by `domain`."""
    if k < 1:
        raise GymError(f"difficulty filter: k must be at least 1 (got {k})")
    rated = []
    for sample in samples:
        responses = sampler(domain.prompt(sample), k)
        if len(responses) != k:
            raise GymError(f"difficulty filter: the sampler returned {len(responses)} responses, asked for {k}")
        rewards = tuple(domain.score(sample, r)[0] for r in responses)
        rated.append(Rated(sample, sum(r >= pass_threshold for r in rewards) / k, rewards))
    return rated


def moderate(rated: Iterable[Rated], low: float = 0.0, high: float = 1.0, inclusive: bool = False) -> list[Sample]:
    """The samples whose pass rate lies in the band: `low < rate < high` (or `<=` with `inclusive`)."""
    if not 0.0 <= low <= high <= 1.0:
        raise GymError(f"difficulty filter: need 0 <= low <= high <= 1 (got low={low}, high={high})")
    if inclusive:
        return [r.sample for r in rated if low <= r.pass_rate <= high]
    return [r.sample for r in rated if low < r.pass_rate < high]


def filter_moderate(domain: Domain, samples: Iterable[Sample], sampler: Sampler, k: int, *, low: float = 0.0,
                    high: float = 1.0, inclusive: bool = False, pass_threshold: float = 1.0) -> list[Sample]:
    """`rate` then `moderate`: the prompts of moderate difficulty for this policy."""
    return moderate(rate(domain, samples, sampler, k, pass_threshold), low, high, inclusive)
