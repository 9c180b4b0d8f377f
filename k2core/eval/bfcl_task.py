"""BFCL as harness tasks: `bfcl` (the single-turn categories, one reply each) and `bfcl_multi_turn`
(multi_turn_base, an agent loop per sample). Scores are grouped by category (macro_accuracy is their mean);
BFCL's leaderboard groups come from `k2core.eval.bfcl.aggregate` over per-sample results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from k2core.eval.bfcl_ast import check_ast
from k2core.eval.bfcl_data import AST_CATEGORIES, MULTI_TURN_CATEGORIES, RELEVANCE_CATEGORIES, BfclRecord, load_bfcl
from k2core.eval.bfcl_multi_turn import check_multi_turn, run_multi_turn
from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Scorer, Task, TaskOptions, subset
from k2core.eval.stats import ACCURACY, MACRO_ACCURACY
from k2core.llm.base import ChatBackend
from k2core.llm.errors import RequestError


def _samples(records: list[BfclRecord]) -> list[Sample]:
    return [Sample(id=r.id, input=r.messages, tools=r.tools, metadata={"category": r.category}) for r in records]


def _scorer(records: list[BfclRecord], multi_turn: bool) -> Scorer:
    by_id = {r.id: r for r in records}

    def score(sample: Sample, output: Output) -> Score:
        record = by_id[sample.id]
        if multi_turn:
            verdict = check_multi_turn(record, json.loads(output.completion))  # the recorded calls, re-checked
        else:
            verdict = check_ast(record, (output.message or {}).get("tool_calls"))
        return Score(value=float(verdict.valid), reason=verdict.error_type or "passed", group=record.category)

    return score


@dataclass
class MultiTurnSolver:
    """Plays one multi-turn record; the output's completion is the calls per turn and step (JSON)."""

    records: dict[str, BfclRecord]
    max_tokens: int = 1024
    seed: int = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"solver": "bfcl_multi_turn", "max_tokens": self.max_tokens, "seed": self.seed}

    def check(self, backend: ChatBackend) -> None:
        return None

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        try:
            episode = run_multi_turn(self.records[sample.id], backend, self.max_tokens, self.seed)
        except RequestError as error:
            return Output(prompt=sample.input, error=str(error))
        return Output(prompt=sample.input, completion=json.dumps(episode.turns), message=episode.messages[-1])


def bfcl_task(options: TaskOptions) -> Task:
    records = load_bfcl(AST_CATEGORIES + RELEVANCE_CATEGORIES)
    return Task("bfcl", subset(_samples(records), options.limit, options.seed),
                GenerateSolver(options.max_tokens, seed=options.seed), _scorer(records, False),
                [ACCURACY, MACRO_ACCURACY])  # fmt: skip


def bfcl_multi_turn_task(options: TaskOptions) -> Task:
    records = load_bfcl(MULTI_TURN_CATEGORIES)
    solver = MultiTurnSolver({r.id: r for r in records}, options.max_tokens, options.seed)
    return Task("bfcl_multi_turn", subset(_samples(records), options.limit, options.seed), solver,
                _scorer(records, True))  # fmt: skip
