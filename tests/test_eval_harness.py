"""The evaluation harness: bootstrap intervals, resuming from the per-sample cache, concurrency, logs, refusals."""

import json
import threading
import time

import numpy as np
import pytest

from k2core.errors import UserError
from k2core.eval.harness import (GenerateSolver, LoglikelihoodSolver, Output, Sample, Score, Task, checker_scorer,
                                 evaluate, run_task, subset)
from k2core.eval.sample_cache import SampleCache
from k2core.eval.stats import ACCURACY, MACRO_ACCURACY, bootstrap, group_mean, mean, summarise
from k2core.llm import ChatResponse, RequestError, Usage


def test_ci_of_a_constant_is_that_constant():
    ones = summarise([ACCURACY], [1.0] * 50, [None] * 50)["accuracy"]
    zeros = summarise([ACCURACY], [0.0] * 50, [None] * 50)["accuracy"]
    assert (ones.value, ones.ci_low, ones.ci_high) == (1.0, 1.0, 1.0)
    assert (zeros.value, zeros.ci_low, zeros.ci_high) == (0.0, 0.0, 0.0)


def test_ci_covers_a_binomial_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    p, n, trials = 0.3, 120, 150
    covered, widths = 0, []
    for t in range(trials):
        values = (rng.random(n) < p).astype(float)
        est = bootstrap(mean, values, np.zeros(n, dtype=int), resamples=400, seed=t)
        covered += est.ci_low <= p <= est.ci_high
        widths.append(est.ci_high - est.ci_low)
    assert 0.88 <= covered / trials <= 0.995, covered / trials
    normal_width = 2 * 1.96 * np.sqrt(p * (1 - p) / n)  # the Wald interval's width at the true p
    assert abs(np.mean(widths) / normal_width - 1) < 0.12


def test_ci_is_seeded_and_macro_average_weights_groups_equally():
    values = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    groups = ["a", "a", "a", "a", "a", "a", "b", "b"]
    first = summarise([ACCURACY, MACRO_ACCURACY], values, groups, seed=3)
    assert first == summarise([ACCURACY, MACRO_ACCURACY], values, groups, seed=3)
    scores = list(np.random.default_rng(0).random(40))  # continuous values: intervals differ between seeds
    assert summarise([ACCURACY], scores, [None] * 40, 200, 3) != summarise([ACCURACY], scores, [None] * 40, 200, 4)
    assert first["accuracy"].value == pytest.approx(5 / 8)
    assert first["macro_accuracy"].value == pytest.approx((4 / 6 + 1 / 2) / 2)
    assert group_mean(np.array([1.0, 0.0]), np.array([0, 2])) == 0.5  # an absent group code does not count
    for est in first.values():
        assert est.ci_low <= est.value <= est.ci_high


class Counting:
    """Answers "yes" to every request, counting calls; fails (as a crash would) once `fail_after` calls are made."""

    backend_id = "counting"

    def __init__(self, fail_after=None, delay=0.0):
        self.calls, self.fail_after, self.delay = 0, fail_after, delay
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def complete(self, request):
        with self.lock:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError("backend died")
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        text = "yes" if "even" in request.messages[-1]["content"] else "no"
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1,
                                                                                         completion_tokens=1))


def _yes_no_task(n=20):
    samples = [Sample(id=f"q{i}", input=[{"role": "user", "content": f"is {i} {'even' if i % 2 else 'odd'}?"}],
                      target="yes" if i % 2 else "no", metadata={"record": {"gold": "yes" if i % 2 else "no"}})
               for i in range(n)]

    def check(record, reply):
        return reply == record["gold"], f"reply {reply!r}"

    return Task("yes_no", samples, GenerateSolver(max_tokens=4), checker_scorer(check))


def test_a_crashed_run_resumes_without_generating_any_sample_again(tmp_path):
    task, cache = _yes_no_task(), SampleCache(tmp_path / "cache")
    crashing = Counting(fail_after=7)
    with pytest.raises(RuntimeError, match="backend died"):
        run_task(task, crashing, tmp_path / "out", cache, progress=False)
    assert crashing.calls == 7 and len(cache) == 7
    resumed = Counting()
    result = run_task(task, resumed, tmp_path / "out", cache, progress=False)
    assert resumed.calls == 13 and result.generated == 13
    assert result.n == 20 and result.metrics["accuracy"].value == 1.0
    again = Counting()
    assert run_task(task, again, tmp_path / "out", cache, progress=False).generated == 0 and again.calls == 0
    other_settings = Task("yes_no", task.samples, GenerateSolver(max_tokens=5), task.scorer)
    fresh = Counting()
    run_task(other_settings, fresh, None, cache, progress=False)
    assert fresh.calls == 20  # other solver settings are other answers


def test_per_sample_log_and_summary(tmp_path):
    results = evaluate([_yes_no_task(6)], Counting(), tmp_path, progress=False, extra={"model": "m"})
    lines = [json.loads(line) for line in (tmp_path / "yes_no.samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"q{i}" for i in range(6)]
    first = lines[1]
    assert first["prompt"] == [{"role": "user", "content": "is 1 even?"}]
    assert (first["response"], first["score"], first["reason"], first["target"]) == ("yes", 1.0, "reply 'yes'", "yes")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend_id"] == "counting" and summary["model"] == "m"
    assert summary["tasks"]["yes_no"]["n"] == 6
    assert summary["tasks"]["yes_no"]["metrics"]["accuracy"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert results["yes_no"].metrics["accuracy"].value == 1.0


def test_endpoints_are_queried_concurrently_within_the_bound_and_logged_in_order(tmp_path):
    backend = Counting(delay=0.05)
    run_task(_yes_no_task(16), backend, tmp_path, concurrency=4, progress=False)
    assert 2 <= backend.max_in_flight <= 4
    ids = [json.loads(line)["id"] for line in (tmp_path / "yes_no.samples.jsonl").read_text().splitlines()]
    assert ids == [f"q{i}" for i in range(16)]


class Refusing:
    backend_id = "refusing"

    def __init__(self):
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        raise RequestError("the prompt has 9000 tokens; the model's context is 8192")


def test_a_refused_request_scores_zero_with_the_reason_and_is_not_asked_again(tmp_path):
    cache, backend = SampleCache(tmp_path), Refusing()
    result = run_task(_yes_no_task(3), backend, tmp_path, cache, progress=False)
    assert result.errors == 3 and result.metrics["accuracy"].value == 0.0
    line = json.loads((tmp_path / "yes_no.samples.jsonl").read_text().splitlines()[0])
    assert "context is 8192" in line["reason"] and line["score"] == 0.0
    run_task(_yes_no_task(3), backend, tmp_path, cache, progress=False)
    assert backend.calls == 3


def test_loglikelihood_tasks_refuse_chat_only_backends():
    task = Task("mc", [Sample(id="1", metadata={"prompt": "x", "continuations": [" a"]})], LoglikelihoodSolver(),
                lambda s, o: Score(value=0.0))
    with pytest.raises(UserError, match="cannot score log-likelihoods"):
        run_task(task, Counting(), progress=False)


def test_subset_is_seeded_and_nested():
    samples = [Sample(id=str(i)) for i in range(50)]
    assert subset(samples, 10, 0) == subset(samples, 10, 0)
    assert subset(samples, 10, 0) != subset(samples, 10, 1)
    assert subset(samples, 20, 0)[:10] == subset(samples, 10, 0)
    assert sorted(s.id for s in subset(samples, None, 0)) == sorted(s.id for s in samples)


def test_output_round_trips_through_the_cache(tmp_path):
    cache = SampleCache(tmp_path)
    output = Output(prompt="p", choice_logprobs=[-1.0, -2.5])
    cache.put("k", "t", "s", "b", output.model_dump_json())
    assert Output.model_validate_json(cache.get("k")) == output
    assert cache.get("missing") is None


class MathReplier:
    """Replies to each gsm_symbolic question with `answer(gold)` (gold looked up from the task)."""

    backend_id = "math-replier"

    def __init__(self, task, answer):
        self.gold = {s.input[-1]["content"]: s.target for s in task.samples}
        self.answer = answer

    def complete(self, request):
        text = self.answer(self.gold[request.messages[-1]["content"]])
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1,
                                                                                         completion_tokens=1))


def test_gsm_symbolic_task_scores_gold_answers_1_and_wrong_ones_0():
    from k2core.eval.harness import TaskOptions
    from k2core.eval.registry import build_tasks

    task = build_tasks(["gsm_symbolic"], TaskOptions(limit=10))[0]
    assert len(task.samples) == 10 and len({s.id for s in task.samples}) == 10
    right = run_task(task, MathReplier(task, lambda g: f"So the total is \\boxed{{{g}}}."), progress=False)
    assert right.metrics["accuracy"].value == 1.0
    wrong = run_task(task, MathReplier(task, lambda g: f"\\boxed{{{float(g) + 1}}}"), progress=False)
    assert wrong.metrics["accuracy"].value == 0.0
