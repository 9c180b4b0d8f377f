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
from k2core.eval.stats import ACCURACY, MACRO_ACCURACY, Metric, TableMetric, bootstrap, group_mean, mean, summarise
from k2core.llm import ChatResponse, RequestError, Usage
from tests.gold_replier import GoldReplier


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


def test_gsm_symbolic_task_scores_gold_answers_1_and_wrong_ones_0():
    from k2core.eval.harness import TaskOptions
    from k2core.eval.registry import build_tasks

    task = build_tasks(["gsm_symbolic"], TaskOptions(limit=10))[0]
    assert len(task.samples) == 10 and len({s.id for s in task.samples}) == 10
    right = run_task(task, GoldReplier(task, lambda g: f"So the total is \\boxed{{{g}}}."), progress=False)
    assert right.metrics["accuracy"].value == 1.0
    wrong = run_task(task, GoldReplier(task, lambda g: f"\\boxed{{{float(g) + 1}}}"), progress=False)
    assert wrong.metrics["accuracy"].value == 0.0


def test_ratio_metric_is_a_micro_average_and_resamples_whole_samples():
    """Instruction-level accuracy pools instructions over prompts; its interval resamples prompts."""
    followed, given = [2, 0, 1, 3], [3, 1, 1, 3]
    named = [{"followed": f, "given": g} for f, g in zip(followed, given)]
    inst = Metric("inst", value="followed", per="given")
    est = summarise([inst, ACCURACY], [0.0, 0.0, 1.0, 1.0], [None] * 4, resamples=300, seed=1, named=named)
    assert est["inst"].value == pytest.approx(6 / 8)  # not the mean of per-prompt shares (0.667 + 0 + 1 + 1) / 4
    rng = np.random.default_rng(1)  # the same resamples, by hand: each draws whole prompts
    by_hand = []
    for _ in range(300):
        idx = rng.integers(0, 4, 4)
        by_hand.append(np.take(followed, idx).sum() / np.take(given, idx).sum())
    assert (est["inst"].ci_low, est["inst"].ci_high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    with pytest.raises(ValueError, match="named values \\['missing'\\]"):
        summarise([Metric("m", value="missing")], [1.0], [None])


def test_table_metrics_see_group_names_and_the_existing_metrics_are_unchanged():
    values, groups = [1.0, 0.0, 1.0, 1.0, 0.0], ["b", "a", "b", None, "a"]
    def only_b(t):
        chosen = t.columns["value"][t.groups == t.labels.index("b")]
        return float(chosen.mean()) if len(chosen) else float("nan")

    est = summarise([TableMetric("b", only_b), ACCURACY, MACRO_ACCURACY], values, groups, resamples=200, seed=5)
    assert (est["b"].value, est["b"].ci_low, est["b"].ci_high) == (1.0, 1.0, 1.0)  # resamples without "b" skipped
    # ACCURACY and MACRO_ACCURACY through the table give what `bootstrap` gives on the raw arrays
    codes = np.unique(np.asarray([g or "" for g in groups]), return_inverse=True)[1]
    assert est["accuracy"] == bootstrap(mean, np.asarray(values), codes, 200, 5)
    assert est["macro_accuracy"] == bootstrap(group_mean, np.asarray(values), codes, 200, 5)


def test_named_values_are_logged_and_a_task_scores_its_own_refusals(tmp_path):
    sample = Sample(id="p", input=[{"role": "user", "content": "x"}])

    def score(s, o):
        return Score(value=1.0, values={"followed": 2.0, "given": 2.0})

    def refusal(s, o):
        return Score(value=0.0, values={"followed": 0.0, "given": 2.0}, reason=f"refused: {o.error}", group="g")

    metrics = [ACCURACY, Metric("inst", value="followed", per="given")]
    ok = run_task(Task("named", [sample], GenerateSolver(4), score, metrics, refusal), Counting(), tmp_path,
                  progress=False)
    assert ok.metrics["inst"].value == 1.0
    line = json.loads((tmp_path / "named.samples.jsonl").read_text())
    assert line["values"] == {"followed": 2.0, "given": 2.0}
    other = Sample(id="q", input=[{"role": "user", "content": "y"}])
    mixed = run_task(Task("named", [sample, other], GenerateSolver(4), score, metrics, refusal),
                     RefusingSome({"y"}), tmp_path, progress=False)
    assert mixed.errors == 1 and mixed.metrics["inst"].value == 0.5 and mixed.metrics["accuracy"].value == 0.5
    refused_line = json.loads((tmp_path / "named.samples.jsonl").read_text().splitlines()[1])
    assert refused_line["reason"].startswith("refused: ") and refused_line["group"] == "g"


class RefusingSome(Counting):
    """Refuses requests whose last message is in `refuse`, answers the rest as Counting does."""

    backend_id = "refusing-some"

    def __init__(self, refuse):
        super().__init__()
        self.refuse = refuse

    def complete(self, request):
        if request.messages[-1]["content"] in self.refuse:
            raise RequestError("too long")
        return super().complete(request)


def test_the_registry_imports_a_task_module_only_when_that_task_is_built():
    import subprocess
    import sys

    code = ("import sys; from k2core.eval.registry import TASKS, build_tasks; from k2core.eval.harness import "
            "TaskOptions; heavy = ['k2core.eval.ifeval', 'k2core.eval.bfcl_task', 'k2core.eval.tau2_task', "
            "'k2core.eval.humaneval_task', 'k2core.eval.mmlu']; before = [m for m in heavy if m in sys.modules]; "
            "build_tasks(['ifbench'], TaskOptions(limit=2)); "
            "print(before, [m for m in heavy if m in sys.modules], len(TASKS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert " ".join(out) == "[] ['k2core.eval.ifeval'] 11"
