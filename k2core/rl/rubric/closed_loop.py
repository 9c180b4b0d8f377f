"""K2's closed loop: the critic's preferences checked against the verifiers, and refinement data from the misses.

On verifiable-reward prompts each response also has a verifier verdict. For every pair of one prompt's responses
where one is verified correct and the other is not, the critic judges both orders (k2core.rl.rubric.ranking
`judge_pair`, the critic's own order-consistent preference, before the prescriptive rule: it is the critic being
checked). The pair *agrees* when the critic prefers the correct response; it *disagrees* when the critic prefers
the incorrect one or cannot separate them (a tie or order-inconsistent verdicts). The agreement rate is
agree / pairs, logged per RL iteration.

"The critic is refined on the disagreements": each disagreement pair becomes two preference examples, one per
order, for the critic itself: `prompt` is the critic's judging conversation, `chosen` the reply naming the correct
response (with the detectors' prescriptive flags), `rejected` the reply naming the other one. `preference_frame`
lays them out in the `sft.parquet` shape (example_id, source, messages = prompt + chosen, tools) plus `prompt`,
`chosen`, `rejected` columns (JSON strings of OpenAI-style messages), so an SFT step trains on `messages` and a
DPO-style step on the triple: `k2core.rl.rubric.refine.refine_critic` is that step for a k2-checkpoint critic;
when and on which data to run it is the RL trainer's job (the hand-off).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Literal

import pandas as pd

from k2core.rl.rubric.critic import Critic, critic_messages, verdict_text
from k2core.rl.rubric.ranking import detected_violations, judge_pair
from k2core.rl.rubric.rubrics import RubricSet
from k2core.storage import write_parquet

PREFERENCE_SOURCE = "critic_refinement"


@dataclass(frozen=True)
class VerifiedGroup:
    """One verifiable-reward prompt, its responses and the verifier's verdict on each."""

    prompt: str
    responses: list[str]
    correct: list[bool]
    rubrics: RubricSet


@dataclass(frozen=True)
class Disagreement:
    """A verified pair the critic got wrong: `critic` is "incorrect" (it preferred the wrong one) or "tie"."""

    prompt: str
    correct: str
    incorrect: str
    critic: Literal["incorrect", "tie"]
    rubrics: RubricSet


@dataclass
class AgreementReport:
    """Critic-verifier agreement over one iteration's verified pairs."""

    pairs: int = 0
    agree: int = 0
    prefers_incorrect: int = 0
    ties: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.agree / self.pairs if self.pairs else float("nan")

    def metrics(self, prefix: str = "rl/critic") -> dict[str, float]:
        """What the trainer logs per iteration."""
        return {f"{prefix}/verifier_agreement": self.rate, f"{prefix}/verified_pairs": float(self.pairs),
                f"{prefix}/prefers_incorrect": float(self.prefers_incorrect), f"{prefix}/ties": float(self.ties)}


def critic_verifier_agreement(critic: Critic, groups: Sequence[VerifiedGroup]) -> AgreementReport:
    """Check the critic's preferences on every (correct, incorrect) pair of each group against the verifier."""
    report = AgreementReport()
    for group in groups:
        if len(group.correct) != len(group.responses):
            raise ValueError(f"a verified group has {len(group.responses)} responses but {len(group.correct)} "
                             "verifier verdicts")
        right = [r for r, ok in zip(group.responses, group.correct) if ok]
        wrong = [r for r, ok in zip(group.responses, group.correct) if not ok]
        for good, bad in product(right, wrong):
            preference = judge_pair(critic, group.rubrics, group.prompt, good, bad)[0]
            report.pairs += 1
            if preference == "first":
                report.agree += 1
                continue
            outcome: Literal["incorrect", "tie"] = "incorrect" if preference == "second" else "tie"
            report.prefers_incorrect += outcome == "incorrect"
            report.ties += outcome == "tie"
            report.disagreements.append(Disagreement(group.prompt, good, bad, outcome, group.rubrics))
    return report


def _flags(rubrics: RubricSet, slot: Literal["A", "B"], response: str) -> list[tuple[Literal["A", "B"], str]]:
    return [(slot, key) for key in sorted(detected_violations(rubrics, response))]


def preference_examples(disagreements: Sequence[Disagreement]) -> list[dict[str, object]]:
    """Two critic preference examples per disagreement (correct response as A, then as B)."""
    examples = []
    for d in disagreements:
        for correct_slot in ("A", "B"):
            a, b = (d.correct, d.incorrect) if correct_slot == "A" else (d.incorrect, d.correct)
            flags = _flags(d.rubrics, "A", a) + _flags(d.rubrics, "B", b)
            wrong_slot = "B" if correct_slot == "A" else "A"
            examples.append({
                "prompt": critic_messages(d.rubrics, d.prompt, a, b),
                "chosen": [{"role": "assistant", "content": verdict_text(correct_slot, flags)}],
                "rejected": [{"role": "assistant", "content": verdict_text(wrong_slot, flags)}],
                "rubrics": d.rubrics.fingerprint(),
                "critic": d.critic,
            })
    return examples


def preference_frame(examples: Sequence[dict[str, object]]) -> pd.DataFrame:
    """The examples as a table: the sft.parquet columns plus prompt/chosen/rejected (JSON message lists)."""
    rows = []
    for example in examples:
        prompt, chosen = example["prompt"], example["chosen"]
        payload = json.dumps([prompt, chosen, example["rejected"]], sort_keys=True, ensure_ascii=False)
        rows.append({
            "example_id": "critic-" + hashlib.sha256(payload.encode()).hexdigest()[:16],
            "source": PREFERENCE_SOURCE,
            "messages": json.dumps([*prompt, *chosen], ensure_ascii=False),  # type: ignore[misc]
            "tools": "[]",
            "prompt": json.dumps(prompt, ensure_ascii=False),
            "chosen": json.dumps(chosen, ensure_ascii=False),
            "rejected": json.dumps(example["rejected"], ensure_ascii=False),
            "rubrics": example["rubrics"],
            "critic": example["critic"],
        })
    columns = ["example_id", "source", "messages", "tools", "prompt", "chosen", "rejected", "rubrics", "critic"]
    return pd.DataFrame(rows, columns=columns)


def write_preferences(disagreements: Sequence[Disagreement], uri: str | Path) -> int:
    """Write the refinement data for one iteration's disagreements (atomic, local or S3); returns the row count."""
    frame = preference_frame(preference_examples(disagreements))
    write_parquet(frame, uri)
    return len(frame)
