"""BFCL as harness tasks: `bfcl` (the single-turn categories, one reply each) and `bfcl_multi_turn`
(multi_turn_base, an agent loop per sample). Scores are grouped by category.

Metrics: accuracy (every sample alike), macro_accuracy (the mean of the categories' accuracies), each category's
accuracy (`category/<name>`: BFCL's group "irrelevance" shares a category's name), and BFCL's leaderboard groups as `k2core.eval.bfcl.aggregate` computes them
(simple, non_live, live, irrelevance, relevance, multi_turn) for each group whose categories all have samples in the
task (BFCL counts a category it did not run as 0, which would make a subset's group figure meaningless). Each is
bootstrapped over samples like any metric."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from k2core.eval.bfcl import BfclResult, aggregate
from k2core.eval.bfcl_ast import check_ast
from k2core.eval.bfcl_data import AST_CATEGORIES, MULTI_TURN_CATEGORIES, RELEVANCE_CATEGORIES, BfclRecord, load_bfcl
from k2core.eval.bfcl_multi_turn import check_multi_turn, run_multi_turn
from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Scorer, Task, TaskOptions, subset
from k2core.eval.stats import ACCURACY, MACRO_ACCURACY, VALUE, AnyMetric, Table, TableMetric

# BFCL's leaderboard groups (k2core.eval.bfcl.aggregate) and the categories each one needs
GROUPS = {
    "simple": ("simple_python", "simple_java", "simple_javascript"),
    "non_live": ("simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple"),
    "live": ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"),
    "irrelevance": ("irrelevance", "live_irrelevance"),
    "relevance": ("live_relevance",),
    "multi_turn": ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"),
}
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


def _refusal(sample: Sample, output: Output) -> Score:
    """A refused sample fails in its own category."""
    return Score(value=0.0, reason=f"backend refused the request: {output.error}", group=sample.metadata["category"])


def _category_accuracy(table: Table, category: str) -> float:
    code = table.labels.index(category)
    chosen = table.groups == code
    return float(table.columns[VALUE][chosen].mean()) if chosen.any() else float("nan")


def _leaderboard(table: Table, group: str) -> float:
    labels = np.asarray(table.labels)[table.groups]
    results = (BfclResult("", str(c), bool(v)) for c, v in zip(labels, table.columns[VALUE], strict=True))
    return aggregate(results).scores[group]


def metrics(samples: list[Sample]) -> list[AnyMetric]:
    """accuracy, macro_accuracy, one accuracy per category present, and the leaderboard groups fully present."""
    present = sorted({s.metadata["category"] for s in samples})
    per_category = [TableMetric(f"category/{c}", lambda t, c=c: _category_accuracy(t, c)) for c in present]
    groups = [TableMetric(g, lambda t, g=g: _leaderboard(t, g))
              for g, needs in GROUPS.items() if set(needs) <= set(present)]
    return [ACCURACY, MACRO_ACCURACY, *per_category, *groups]


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
    samples = subset(_samples(records), options.limit, options.seed)
    return Task("bfcl", samples, GenerateSolver(options.max_tokens, seed=options.seed), _scorer(records, False),
                metrics(samples), _refusal)


def bfcl_multi_turn_task(options: TaskOptions) -> Task:
    records = load_bfcl(MULTI_TURN_CATEGORIES)
    solver = MultiTurnSolver({r.id: r for r in records}, options.max_tokens, options.seed)
    samples = subset(_samples(records), options.limit, options.seed)
    return Task("bfcl_multi_turn", samples, solver, _scorer(records, True), metrics(samples), _refusal)
