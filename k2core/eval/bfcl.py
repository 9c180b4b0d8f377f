"""BFCL v4 on any chat backend: score one record, and aggregate per-category results as BFCL's leaderboard does.

Entry points: `load_bfcl` (records), `check_ast` (single-turn verdict on OpenAI-format tool calls),
`run_multi_turn` (agent loop plus state/response checks), `score_record` (either, against a backend) and
`aggregate`.

Aggregation (bfcl_eval `eval_runner_helper.generate_leaderboard_csv`, read for the facts):
- non_live: unweighted mean of simple, multiple, parallel and parallel_multiple, where simple is the unweighted
  mean of simple_python, simple_java and simple_javascript (irrelevance is not part of it);
- live: mean of live_simple, live_multiple, live_parallel and live_parallel_multiple weighted by test count;
- irrelevance: unweighted mean of irrelevance and live_irrelevance; relevance: live_relevance;
- multi_turn: unweighted mean of multi_turn_base, _miss_func, _miss_param and _long_context;
- agentic: unweighted mean of web search (base, no_snippet) and memory (kv, vector, rec_sum);
- overall: non_live, live, irrelevance, multi_turn and agentic weighted 10 : 10 : 10 : 30 : 40.
A category that was not run counts as 0 (weighted by its full size where weights are counts), as in BFCL, which
shows such a figure as N/A: `BfclSummary.missing` lists them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from k2core.eval.bfcl_ast import AstVerdict, check_ast
from k2core.eval.bfcl_data import MULTI_TURN_CATEGORIES, BfclRecord, category_size, load_bfcl
from k2core.eval.bfcl_multi_turn import run_multi_turn
from k2core.llm.base import ChatBackend, ChatRequest

__all__ = ["BfclResult", "BfclSummary", "aggregate", "check_ast", "load_bfcl", "run_multi_turn", "score_record"]

_SIMPLE = ("simple_python", "simple_java", "simple_javascript")
_LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
_MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
_WEB_SEARCH = ("web_search_base", "web_search_no_snippet")
_MEMORY = ("memory_kv", "memory_vector", "memory_rec_sum")
_OVERALL_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance": 10, "multi_turn": 30, "agentic": 40}


@dataclass(frozen=True)
class BfclResult:
    id: str
    category: str
    valid: bool
    error_type: str = ""
    reason: str = ""


@dataclass(frozen=True)
class BfclSummary:
    """Accuracies in [0, 1]: one per category run and the leaderboard's groups; `missing` counted as 0."""

    scores: dict[str, float]
    counts: dict[str, int]
    missing: list[str] = field(default_factory=list)


def score_record(record: BfclRecord, backend: ChatBackend, max_tokens: int = 1024, seed: int = 0) -> BfclResult:
    """Ask `backend` (greedy, seeded) and judge the answer as BFCL judges it."""
    if record.category in MULTI_TURN_CATEGORIES:
        verdict = run_multi_turn(record, backend, max_tokens=max_tokens, seed=seed).verdict
    else:
        request = ChatRequest(messages=record.messages, tools=record.tools, max_tokens=max_tokens, seed=seed)
        verdict = check_ast(record, backend.complete(request).message.get("tool_calls"))
    return result_of(record, verdict)


def result_of(record: BfclRecord, verdict: AstVerdict) -> BfclResult:
    return BfclResult(record.id, record.category, verdict.valid, verdict.error_type, verdict.reason)


def aggregate(results: Iterable[BfclResult]) -> BfclSummary:
    """Per-category accuracy and BFCL's summary groups (non_live, live, irrelevance, relevance, multi_turn, overall)."""
    passed: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        passed[result.category].append(result.valid)
    scores = {c: sum(v) / len(v) for c, v in passed.items()}
    counts = {c: len(v) for c, v in passed.items()}
    missing: list[str] = []

    def score(category: str) -> float:
        if category not in scores:
            missing.append(category)
        return scores.get(category, 0.0)

    def mean(categories: Sequence[str]) -> float:
        return sum(score(c) for c in categories) / len(categories)

    def size(category: str) -> int:
        return counts.get(category) or category_size(category)

    groups = {"simple": mean(_SIMPLE)}
    groups["non_live"] = (groups["simple"] + score("multiple") + score("parallel") + score("parallel_multiple")) / 4
    groups["live"] = sum(score(c) * size(c) for c in _LIVE) / sum(size(c) for c in _LIVE)
    groups["irrelevance"] = mean(("irrelevance", "live_irrelevance"))
    groups["relevance"] = score("live_relevance")
    groups["multi_turn"] = mean(_MULTI_TURN)
    groups["agentic"] = (mean(_WEB_SEARCH) + mean(_MEMORY)) / 2
    total = sum(_OVERALL_WEIGHTS.values())
    groups["overall"] = sum(groups[g] * w for g, w in _OVERALL_WEIGHTS.items()) / total
    return BfclSummary(scores={**scores, **groups}, counts=counts, missing=sorted(set(missing)))
