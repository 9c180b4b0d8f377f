"""The evaluation harness: a task is a dataset, a solver and a scorer (Inspect AI's shape), run against any backend.

- `Sample`: one item (id, the chat messages a generating solver sends, the target, metadata such as a raw-text
  prompt and answer choices for log-likelihood scoring).
- A solver turns a sample and a backend into an `Output` (`GenerateSolver`: one greedy, seeded chat completion;
  `LoglikelihoodSolver`: the log-probability of each choice, for backends that hold the model). Its `settings` are
  part of the cache key.
- A scorer turns (sample, output) into a `Score` (value, named per-sample values, parsed answer, reason, group).
  The task's metrics (`k2core.eval.stats`) summarise a column (the value or a named value), a ratio of two
  (instruction-level accuracy = followed / given; bits / bytes), or the whole table (group names: BFCL's groups).
  `Task.refusal` scores a sample the backend refused (default 0; a task whose metrics read groups or named values
  supplies its own, so a refusal still counts where it belongs).
- `run_task` answers every sample (a bounded thread pool against endpoints, one at a time for local models, which
  serialise on their lock anyway), caching each output as it arrives (`SampleCache`: a rerun after a crash asks the
  model only for what is missing), writes one JSONL line per sample (id, prompt, response, answer, target, score,
  reason) and summarises the scores with bootstrap 95% intervals (`k2core.eval.stats`).

Adding a task (e.g. a checker module with `load() -> list[record]` and `check(record, reply) -> (passed, reason)`)::

    def my_task(options: TaskOptions) -> Task:
        records = load()
        samples = [Sample(id=r["id"], input=[{"role": "user", "content": r["prompt"]}], target="",
                          metadata={"record": r}) for r in records]
        return Task("my_task", subset(samples, options.limit, options.seed),
                    GenerateSolver(options.max_tokens, seed=options.seed), checker_scorer(check))

then register it in `k2core.eval.registry.TASKS` (a `LazyTask`: module and factory name). A scorer that needs tool
calls reads `output.message`; one that reports several figures per sample returns `Score(values={...})` and lists a
`Metric` per figure (see `ifeval_task`, `humaneval_task`, `lm_task`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from k2core.errors import UserError
from k2core.eval.sample_cache import SampleCache, sample_key
from k2core.eval.stats import ACCURACY, AnyMetric, Estimate, summarise
from k2core.llm.base import ChatBackend, ChatRequest
from k2core.llm.errors import RequestError
from k2core.llm.loglik import LoglikelihoodBackend
from k2core.storage import write_json, write_text


class Sample(BaseModel):
    """One item of a task's dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    input: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    target: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Output(BaseModel):
    """What the model produced for one sample (what the cache stores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Any = None  # what was sent: chat messages or a raw-text prompt
    completion: str = ""  # the reply's text
    completions: list[str] | None = None  # every reply, when the solver draws several per sample (pass@k)
    message: dict[str, Any] | None = None  # the whole assistant message (tool calls included)
    choice_logprobs: list[float] | None = None
    error: str | None = None  # the backend refused this request (too long for the context, ...): scored 0


class Score(BaseModel):
    """One sample's verdict: its `value` (what ACCURACY averages), and any further named per-sample quantities the
    task's metrics read (`values`, e.g. {"inst_strict": 2, "instructions": 3}: see `k2core.eval.stats`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    values: dict[str, float] = Field(default_factory=dict)
    answer: str | None = None
    reason: str = ""
    group: str | None = None


class Solver(Protocol):
    settings: dict[str, Any]

    def check(self, backend: ChatBackend) -> None:
        """Raise a UserError when this backend cannot be evaluated this way."""

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output: ...


Scorer = Callable[[Sample, Output], Score]


def refused(sample: Sample, output: Output) -> Score:
    """How a sample the backend refused scores by default: 0, with the backend's reason."""
    return Score(value=0.0, reason=f"backend refused the request: {output.error}")


@dataclass(frozen=True)
class TaskOptions:
    """What every task factory may use: subset size, seed, generation budget, whether log-likelihoods exist, for
    agentic tasks the trials per sample and the simulated user's backend, for pass@k the replies per problem and
    their temperature, and for lm_loss its text."""

    limit: int | None = None
    seed: int = 0
    max_tokens: int = 256
    loglikelihood: bool = False
    trials: int = 1  # conversations per sample, for tasks scored by pass^k (τ²); replies per problem for pass@k
    temperature: float = 0.0  # sampling temperature where a task draws several replies per sample (pass@k)
    texts: str | None = None  # held-out text file for lm_loss (.txt, .jsonl, .parquet); None: its default text
    user_backend: ChatBackend | None = None  # a simulated user's model (τ²); None: the backend under evaluation


@dataclass
class Task:
    name: str
    samples: list[Sample]
    solver: Solver
    scorer: Scorer
    metrics: list[AnyMetric] = field(default_factory=lambda: [ACCURACY])
    refusal: Scorer = refused  # scores a refused sample (a task whose metrics read groups or named values keeps them)


@dataclass
class GenerateSolver:
    """One chat completion of the sample's messages: greedy (temperature 0) and seeded by default."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"solver": "generate", "max_tokens": self.max_tokens, "temperature": self.temperature,
                "seed": self.seed}

    def check(self, backend: ChatBackend) -> None:
        return None

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        request = ChatRequest(messages=sample.input, tools=sample.tools, temperature=self.temperature,
                              seed=self.seed, max_tokens=self.max_tokens)
        try:
            message = backend.complete(request).message
        except RequestError as error:
            return Output(prompt=sample.input, error=str(error))
        return Output(prompt=sample.input, completion=message.get("content") or "", message=message)


@dataclass
class LoglikelihoodSolver:
    """The log-probability of each of `sample.metadata["continuations"]` after `sample.metadata["prompt"]`."""

    @property
    def settings(self) -> dict[str, Any]:
        return {"solver": "loglikelihood"}

    def check(self, backend: ChatBackend) -> None:
        if not isinstance(backend, LoglikelihoodBackend):
            raise UserError(f"{backend.backend_id} cannot score log-likelihoods (only local models and k2 "
                            "checkpoints can); use a task that parses generated answers")

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        prompt = sample.metadata["prompt"]
        scorer = cast(LoglikelihoodBackend, backend)  # check() made sure
        return Output(prompt=prompt, choice_logprobs=scorer.loglikelihood(prompt, sample.metadata["continuations"]))


def checker_scorer(check: Callable[[dict[str, Any], str], tuple[float | bool, str]]) -> Scorer:
    """A scorer from a checker function (record, reply text) -> (score or passed, reason); the record is
    `sample.metadata["record"]`."""

    def score(sample: Sample, output: Output) -> Score:
        value, reason = check(sample.metadata["record"], output.completion)
        return Score(value=float(value), reason=reason)

    return score


def subset(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """`limit` samples drawn without replacement by a seeded shuffle (all of them, shuffled, for None): the same
    seed and limit give the same subset, and a larger limit extends a smaller one."""
    chosen = list(samples)
    random.Random(f"subset:{seed}").shuffle(chosen)
    return chosen if limit is None else chosen[:limit]


@dataclass(frozen=True)
class TaskResult:
    name: str
    n: int
    metrics: dict[str, Estimate]
    generated: int  # samples the model was asked for in this run (the rest came from the cache)
    errors: int  # samples the backend refused
    quantities: tuple[str, ...] = ()  # metrics that are not proportions (shown as they are, not in percent)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "generated": self.generated, "errors": self.errors,
                "metrics": {k: {"value": v.value, "ci95": [v.ci_low, v.ci_high]} for k, v in self.metrics.items()}}


def _log_line(sample: Sample, output: Output, score: Score, cached: bool) -> str:
    response: Any = output.completion
    if output.choice_logprobs is not None:
        response = output.choice_logprobs
    elif output.completions is not None:
        response = output.completions
    record = {"id": sample.id, "prompt": output.prompt, "response": response, "answer": score.answer,
              "target": sample.target, "score": score.value, "reason": score.reason, "group": score.group,
              "error": output.error, "cached": cached}
    if score.values:
        record["values"] = score.values
    if output.message and output.message.get("tool_calls"):
        record["tool_calls"] = output.message["tool_calls"]
    return json.dumps(record, ensure_ascii=False)


def run_task(task: Task, backend: ChatBackend, out_dir: str | Path | None = None, cache: SampleCache | None = None,
             concurrency: int = 1, resamples: int = 1000, seed: int = 0, progress: bool = True) -> TaskResult:
    """Answer, score and summarise every sample of `task`; `<out_dir>/<task>.samples.jsonl` gets one line per sample
    (in the task's sample order)."""
    if not task.samples:
        raise UserError(f"task {task.name} has no samples; raise --limit")
    task.solver.check(backend)
    settings = task.solver.settings

    def answer(sample: Sample) -> tuple[Output, bool]:
        key = sample_key(task.name, sample.model_dump(exclude={"target"}), backend.backend_id, settings)
        stored = cache.get(key) if cache is not None else None
        if stored is not None:
            return Output.model_validate_json(stored), True
        output = task.solver(sample, backend)
        if cache is not None:
            cache.put(key, task.name, sample.id, backend.backend_id, output.model_dump_json())
        return output, False

    bar = tqdm(total=len(task.samples), desc=task.name, unit="sample", disable=not progress)
    try:
        if concurrency > 1:
            with ThreadPoolExecutor(concurrency) as pool:
                futures = [pool.submit(answer, s) for s in task.samples]
                for future in futures:
                    future.add_done_callback(lambda _: bar.update())
                outputs = [f.result() for f in futures]
        else:
            outputs = []
            for sample in task.samples:
                outputs.append(answer(sample))
                bar.update()
    finally:
        bar.close()
    scores = [task.refusal(s, o) if o.error else task.scorer(s, o)
              for s, (o, _) in zip(task.samples, outputs, strict=True)]
    if out_dir is not None:
        lines = [_log_line(s, o, sc, cached) for s, (o, cached), sc in zip(task.samples, outputs, scores, strict=True)]
        write_text("\n".join(lines) + "\n", Path(out_dir) / f"{task.name}.samples.jsonl")
    metrics = summarise(task.metrics, [s.value for s in scores], [s.group for s in scores], resamples, seed,
                        [s.values for s in scores])
    generated = sum(not cached for _, cached in outputs)
    return TaskResult(task.name, len(scores), metrics, generated, sum(o.error is not None for o, _ in outputs),
                      tuple(m.name for m in task.metrics if not m.proportion))


def evaluate(tasks: list[Task], backend: ChatBackend, out_dir: str | Path, cache: SampleCache | None = None,
             concurrency: int = 1, resamples: int = 1000, seed: int = 0, progress: bool = True,
             extra: dict[str, Any] | None = None) -> dict[str, TaskResult]:
    """Run every task; `<out_dir>/summary.json` gets the backend, the settings and every task's metrics."""
    results = {t.name: run_task(t, backend, out_dir, cache, concurrency, resamples, seed, progress) for t in tasks}
    summary = {"backend_id": backend.backend_id, "seed": seed, "bootstrap_resamples": resamples, **(extra or {}),
               "tasks": {name: r.as_dict() for name, r in results.items()}}
    write_json(summary, Path(out_dir) / "summary.json")
    return results
