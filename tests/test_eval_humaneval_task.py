"""The humaneval harness task: code extraction from chat replies (near-misses included), the sandboxed verdict
through run_task (oracle 1, empty/wrong 0, early exit 0) and pass@k over several seeded replies."""

from __future__ import annotations

import json
import threading
from fractions import Fraction

import pytest

from k2core.errors import UserError
from k2core.eval.harness import TaskOptions, run_task
from k2core.eval.humaneval import load_humaneval, score_completion
from k2core.eval.humaneval_task import INSTRUCTION, extract_completion, humaneval_task
from k2core.eval.registry import build_tasks
from k2core.llm import ChatResponse, RequestError, Usage
from k2core.sandbox import SandboxConfig

SANDBOX = SandboxConfig(wall_time_s=10, parallel=2)


@pytest.fixture(scope="module")
def problems():
    return {p.task_id: p for p in load_humaneval()}


def _full(problem) -> str:
    return problem.prompt + problem.canonical_solution


def _passes(problem, reply: str) -> bool:
    return score_completion(problem, extract_completion(reply, problem), SANDBOX)[0]


def test_extracts_code_from_the_reply_shapes_models_write(problems) -> None:
    p = problems["HumanEval/2"]  # truncate_number
    full, body = _full(p), p.canonical_solution
    replies = {
        "fenced whole function": f"Here it is:\n```python\n{full}```\nIt returns the decimal part.",
        "fence tag py, prose before and after": f"Sure!\n\n```py\n{full}\n```\n\nHope this helps.",
        "unterminated fence (cut at max_tokens)": f"```python\n{full}",
        "usage block first, function second": f"```python\nprint(truncate_number(3.5))\n```\n```python\n{full}```",
        "bare whole function with prose around": f"The answer is:\n{full}\nThis works because % 1.0 drops the integer.",
        "whole function with a __main__ block": f"```python\n{full}\nif __name__ == '__main__':\n    print(input())\n```",
        "cut at max_tokens inside a later example": f"```python\n{full}\n\ndef example():\n    print(trunc",
        "bare indented body (a completion)": body,
        "body at column 0": "return number % 1.0\n",
        "indented fenced function": "```python\n" + "\n".join("    " + line for line in full.splitlines()) + "\n```",
    }
    failing = [name for name, reply in replies.items() if not _passes(p, reply)]
    assert failing == []


def test_near_misses_fail(problems) -> None:
    p = problems["HumanEval/2"]
    wrong = {
        "wrong body": "```python\ndef truncate_number(number: float) -> float:\n    return number // 1.0\n```",
        "other function only": "```python\ndef helper(x):\n    return x % 1.0\n```",
        "prose only": "The decimal part is the number minus its floor.",
        "empty": "",
        "exits early": "    import os\n    os._exit(0)\n",
        "exits early, whole function": "```python\nimport sys\ndef truncate_number(number):\n    sys.exit(0)\n```",
        "javascript": "```javascript\nfunction truncate_number(number) {\n  return number % 1.0;\n}\n```",
    }
    passing = [name for name, reply in wrong.items() if _passes(p, reply)]
    assert passing == []


class Oracle:
    """Replies to each HumanEval prompt with `reply(problem)`; records every request's seed per problem."""

    backend_id = "humaneval-oracle"

    def __init__(self, problems, reply):
        self.by_prompt = {p.prompt.rstrip(): p for p in problems.values()}
        self.reply, self.seeds, self.lock = reply, {}, threading.Lock()

    def problem(self, request):
        text = request.messages[-1]["content"]
        assert text.startswith(INSTRUCTION)
        return self.by_prompt[text.split("```python\n", 1)[1].removesuffix("\n```")]

    def complete(self, request):
        problem = self.problem(request)
        with self.lock:
            seeds = self.seeds.setdefault(problem.task_id, [])
            seeds.append(request.seed)
            draw = len(seeds) - 1
        content = self.reply(problem, draw, request)
        return ChatResponse(message={"role": "assistant", "content": content}, usage=Usage(prompt_tokens=1,
                                                                                            completion_tokens=1))


def test_oracle_scores_1_and_empty_wrong_or_early_exit_replies_score_0(problems, tmp_path) -> None:
    task = build_tasks(["humaneval"], TaskOptions(limit=12, seed=3))[0]
    assert len(task.samples) == 12 and task.samples == humaneval_task(TaskOptions(limit=12, seed=3)).samples
    oracle = run_task(task, Oracle(problems, lambda p, d, r: f"```python\n{_full(p)}```"), tmp_path, progress=False)
    assert oracle.metrics["pass_at_1"].value == 1.0 and set(oracle.metrics) == {"pass_at_1"}
    line = json.loads((tmp_path / "humaneval.samples.jsonl").read_text().splitlines()[0])
    assert line["score"] == 1.0 and line["reason"] == "passed" and "def " in line["answer"]
    for reply in ("", "    return None\n", "    import os\n    os._exit(0)\n"):
        result = run_task(task, Oracle(problems, lambda p, d, r, reply=reply: reply), progress=False)
        assert result.metrics["pass_at_1"].value == 0.0, reply


def test_pass_at_k_over_seeded_replies_equals_the_hand_computation(problems) -> None:
    task = humaneval_task(TaskOptions(limit=3, seed=1, trials=12, temperature=0.8))
    ids = [s.id for s in task.samples]
    right = dict(zip(ids, (0, 1, 5), strict=True))  # problem -> how many of its 12 replies are right

    def reply(problem, draw, request):
        assert request.temperature == 0.8
        return problem.canonical_solution if draw < right[problem.task_id] else "    return None\n"

    backend = Oracle(problems, reply)
    result = run_task(task, backend, progress=False)
    assert {tid: sorted(seeds) for tid, seeds in backend.seeds.items()} == {tid: list(range(1, 13)) for tid in ids}
    # pass@1 = mean c/n; pass@10 = mean 1 - C(12-c, 10)/C(12, 10): c=0 -> 0, c=1 -> 1 - 11/66, c>=3 -> 1
    assert result.metrics["pass_at_1"].value == pytest.approx(float(Fraction(0 + 1 + 5, 36)))
    assert result.metrics["pass_at_10"].value == pytest.approx(float((0 + (1 - Fraction(11, 66)) + 1) / 3))
    assert set(result.metrics) == {"pass_at_1", "pass_at_10"}


class Refusing:
    backend_id = "refusing"

    def complete(self, request):
        raise RequestError("the prompt is longer than the context")


def test_refused_problems_score_0_in_every_metric_and_bad_options_fail() -> None:
    task = humaneval_task(TaskOptions(limit=2, trials=10, temperature=0.5))
    result = run_task(task, Refusing(), progress=False)
    assert result.errors == 2 and {k: v.value for k, v in result.metrics.items()} == {"pass_at_1": 0.0,
                                                                                       "pass_at_10": 0.0}
    with pytest.raises(UserError, match="temperature > 0"):
        humaneval_task(TaskOptions(trials=5))
