"""Pairwise ranking of one prompt's K responses by the critic, both orders, with the prescriptive rule.

For every unordered pair (i, j) the critic judges (A=i, B=j) and (A=j, B=i):
- **Order-swap symmetry.** The critic's preference for the pair is the winner both orders name. When the two
  parsed verdicts disagree (an order-biased critic that always answers "A") the pair is a tie and counts as
  inconsistent; an unparseable reply makes the pair a tie and counts as unparsed.
- **Prescriptive rule.** Response i breaks a prescriptive criterion in the pair when that criterion's deterministic
  detector fires on it, or when the critic flags it in *both* orders (a flag in one order only is position noise).
  If exactly one of the two breaks a rule, it loses the pair whatever the critic preferred; if both do, or neither,
  the critic's preference decides. A detector's finding is the same in every pair, so a response it flags loses
  to every response it does not flag, and gets a lower reward under both rules of k2core.rl.rubric.scores (both
  are monotone in wins over a complete round robin).
The outcome matrix `wins[i][j]` (1 win, 0.5 tie, 0 loss; `wins[i][j] + wins[j][i] == 1`) feeds k2core.rl.rubric.scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

from k2core.rl.rubric.critic import Critic, Verdict
from k2core.rl.rubric.prescriptive import DETECTORS
from k2core.rl.rubric.rubrics import RubricSet

Preference = Literal["first", "second", "tie"]


@dataclass(frozen=True)
class PairJudgement:
    """The outcome of one pair (first = response i, second = response j, i < j)."""

    i: int
    j: int
    critic: Preference  # the critic's order-consistent preference (tie when the orders disagree)
    consistent: bool  # both verdicts parsed and named the same winner (or both a tie)
    unparsed: int  # replies without a verdict (0, 1 or 2)
    violations_i: frozenset[str]
    violations_j: frozenset[str]
    outcome: Preference  # after the prescriptive rule

    @property
    def score_i(self) -> float:
        return {"first": 1.0, "second": 0.0, "tie": 0.5}[self.outcome]


@dataclass(frozen=True)
class GroupRanking:
    """All pair outcomes of one prompt's responses, and the counts the RL logs report."""

    wins: list[list[float]]
    pairs: list[PairJudgement]
    rubrics: str  # RubricSet.fingerprint()

    @property
    def inconsistency_rate(self) -> float:
        """Share of pairs, among those whose two verdicts both parsed, where the two orders disagree."""
        parsed = [p for p in self.pairs if p.unparsed == 0]
        return sum(not p.consistent for p in parsed) / len(parsed) if parsed else 0.0

    @property
    def unparsed(self) -> int:
        return sum(p.unparsed for p in self.pairs)

    @property
    def violators(self) -> set[int]:
        """Responses found breaking a prescriptive rule in at least one of their pairs."""
        return {p.i for p in self.pairs if p.violations_i} | {p.j for p in self.pairs if p.violations_j}


def detected_violations(rubrics: RubricSet, response: str) -> frozenset[str]:
    """The prescriptive criteria whose deterministic detector fires on the response."""
    return frozenset(c.key for c in rubrics.prescriptive_criteria() if DETECTORS[c.detector](response))


def _as_pair(verdict: Verdict, first_is_a: bool) -> Preference | None:
    if verdict.winner is None:
        return None
    if verdict.winner == "tie":
        return "tie"
    return "first" if (verdict.winner == "A") == first_is_a else "second"


def _flags(verdict: Verdict, slot: str) -> set[str]:
    return {key for s, key in verdict.violations if s == slot}


def judge_pair(critic: Critic, rubrics: RubricSet, prompt: str, first: str, second: str,
               detected: tuple[frozenset[str], frozenset[str]] | None = None) -> tuple[Preference, bool, int,
                                                                                        frozenset[str], frozenset[str]]:
    """Both orders of one pair: (critic preference, consistent, unparsed replies, violations of first, of second)."""
    forward = critic.judge(rubrics, prompt, first, second)
    backward = critic.judge(rubrics, prompt, second, first)
    views = [_as_pair(forward, True), _as_pair(backward, False)]
    unparsed = sum(v is None for v in views)
    consistent = unparsed == 0 and views[0] == views[1]
    preference: Preference = views[0] if consistent else "tie"  # type: ignore[assignment]
    det_first, det_second = detected or (detected_violations(rubrics, first), detected_violations(rubrics, second))
    critic_first = _flags(forward, "A") & _flags(backward, "B")
    critic_second = _flags(forward, "B") & _flags(backward, "A")
    return preference, consistent, unparsed, det_first | critic_first, det_second | critic_second


def rank_group(critic: Critic, rubrics: RubricSet, prompt: str, responses: list[str]) -> GroupRanking:
    """Judge every pair of the prompt's responses in both orders and apply the prescriptive rule."""
    k = len(responses)
    if k < 2:
        raise ValueError(f"ranking needs at least 2 responses per prompt, got {k}")
    detected = [detected_violations(rubrics, r) for r in responses]
    wins = [[0.0] * k for _ in range(k)]
    pairs = []
    for i, j in combinations(range(k), 2):
        preference, consistent, unparsed, v_i, v_j = judge_pair(
            critic, rubrics, prompt, responses[i], responses[j], (detected[i], detected[j]))
        outcome: Preference = preference
        if v_i and not v_j:
            outcome = "second"
        elif v_j and not v_i:
            outcome = "first"
        pair = PairJudgement(i, j, preference, consistent, unparsed, v_i, v_j, outcome)
        wins[i][j], wins[j][i] = pair.score_i, 1.0 - pair.score_i
        pairs.append(pair)
    return GroupRanking(wins=wins, pairs=pairs, rubrics=rubrics.fingerprint())
