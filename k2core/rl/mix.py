"""The RL prompt set as a mix of gym domains (K2 §3.2.1): which prompts an iteration draws, and their rewards.

`rl.<profile>.domains` maps a gym domain name (k2core.rl.gym: `math`, `rg/<dataset>`, `code`, `ifeval`, ...) to
its weight; each iteration's `prompts_per_iteration` prompts are split over the domains in proportion to the
weights (largest remainder, so the counts are fixed for a given config, not drawn). `math` prompts come from the
synth stage's math.parquet "rl" split; every other domain must be procedural and makes its samples on the fly from
seeds drawn from the run's random stream (reasoning-gym generators, generated code problems, generated IFEval
instructions). Every response is scored by the gym's `score(domain, sample, response)`; a verifier that raises
scores 0 and is counted, so a broken verifier shows in the logs instead of silently paying or withholding reward.
The gym is imported where it is used: importing it registers every domain (and their verifiers' dependencies),
which the stages that only import k2core.rl's helpers (synth, bench) never need.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

Sample = dict[str, Any]  # a gym sample (k2core.rl.gym.core)
Message = dict[str, Any]
MATH = "math"
SEED_RANGE = 2**31  # procedural samples are generator(seed) for seeds drawn uniformly below this


def allocate(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """Split `total` prompts over domains in proportion to `weights` (largest remainder; ties to the one listed
    first)."""
    if not weights or any(w <= 0 for w in weights.values()):
        raise ValueError(f"rl.domains needs at least one domain, every weight > 0 (got {dict(weights)})")
    norm = sum(weights.values())
    exact = {name: total * w / norm for name, w in weights.items()}
    counts = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])  # stable: config order on ties
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


class PromptMix:
    """Draws each iteration's (domain, sample) pairs: math from its stored rows, other domains from generators."""

    def __init__(self, weights: Mapping[str, float], math_samples: Sequence[Sample] = ()) -> None:
        from k2core.rl.gym import GymError, ProceduralDomain, get_domain  # noqa: PLC0415 - see the docstring

        self.weights = dict(weights)
        self.math_samples = list(math_samples)
        for name in self.weights:
            domain = get_domain(name)  # unknown names fail here, naming the registered ones
            if name == MATH:
                if not self.math_samples:
                    raise ValueError("rl.domains has math but there are no math RL prompts")
            elif not isinstance(domain, ProceduralDomain):
                raise GymError(f"rl.domains: {name!r} has no sample generator; the RL stage can only mix math "
                               "(from the synth stage) and procedural domains")

    def draw(self, rng: random.Random, total: int) -> list[tuple[str, Sample]]:
        """`total` (domain, sample) pairs, domain by domain in config order; math without repeats within an
        iteration."""
        from k2core.rl.gym import get_domain  # noqa: PLC0415 - see the module docstring

        drawn: list[tuple[str, Sample]] = []
        for name, count in allocate(self.weights, total).items():
            if name == MATH:
                chosen = rng.sample(range(len(self.math_samples)), min(count, len(self.math_samples)))
                drawn += [(name, self.math_samples[i]) for i in chosen]
            else:
                generate = get_domain(name).generate  # type: ignore[attr-defined]  # procedural, checked in __init__
                drawn += [(name, generate(rng.randrange(SEED_RANGE))) for _ in range(count)]
        return drawn

    @staticmethod
    def messages(domain: str, sample: Sample) -> list[Message]:
        """The prompt messages the domain asks `sample` with."""
        from k2core.rl.gym import get_domain  # noqa: PLC0415 - see the module docstring

        return get_domain(domain).prompt(sample)


class GymScorer:
    """The gym's `score`, with verifier exceptions scored 0 and counted per domain (`errors`, part of resume)."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()

    def __call__(self, domain: str, sample: Sample, response: str) -> float:
        from k2core.rl.gym import score  # noqa: PLC0415 - see the module docstring

        try:
            reward, _ = score(domain, sample, response)
        except Exception:  # noqa: BLE001 - any verifier failure must cost the sample its reward, visibly
            self.errors[domain] += 1
            return 0.0
        return reward
