"""One benchmark over the pipeline's checkpoints (pretrain, SFT, RL), written as a single metrics JSON.

Each model's result is a set of tasks in the evaluation harness's summary shape (`task_result`), so its scores map
to the same tracking keys for every model (`bench_metrics`: `bench/<task>/<metric>`).

Per checkpoint: validation loss and bits per byte on the pretraining stage's held-out corpus
documents (same hash split as `k2core.train.data.pack_corpus`, so set `heldout_fraction` and
`heldout_seed` to pretrain's `val_fraction` and `seed`), greedy accuracy on the held-out math
problems (split "test"), and pass^1 on the tool-environment test tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from k2core.eval.lm import evaluate_lm
from k2core.eval.math import evaluate_math
from k2core.eval.sample_cache import SampleCache
from k2core.eval.suite import SuiteConfig, run_suite
from k2core.eval.tool_env import evaluate_agent, evaluate_tool_use, tool_metrics
from k2core.llm import LLMConfig, make_backend, parse_llm_config
from k2core.model import K2ForCausalLM
from k2core.storage import read_parquet, write_json
from k2core.train.data import is_validation


class BenchConfig(BaseModel):
    """The `bench` section of params.yaml."""

    model_config = ConfigDict(extra="forbid")

    heldout_fraction: float = Field(gt=0, lt=1, description="must equal pretrain.val_fraction")
    heldout_seed: int = Field(description="must equal pretrain.seed")
    lm_max_docs: int = Field(gt=0)
    lm_seq_len: int = Field(gt=0)
    lm_batch_size: int = Field(gt=0)
    math_max_problems: int = Field(gt=0)
    math_max_new_tokens: int = Field(gt=0)
    math_batch_size: int = Field(gt=0)
    reward_timeout_s: float = Field(gt=0)
    tool_max_tasks: int = Field(gt=0)
    tool_max_turns: int = Field(gt=0)
    tool_max_new_tokens: int = Field(gt=0)
    tool_agents: dict[str, LLMConfig] = Field(
        description="named chat backends (a served checkpoint, an external model) also evaluated as the agent on the "
                    "same tool tasks as the checkpoints; only their cache_dir makes a rerun against a live server "
                    "reproducible, since DVC cannot track the server")
    harness: SuiteConfig = Field(description="the public benchmarks (k2core.eval.registry) every checkpoint and "
                                             "every tool agent is scored on, each with its subset size")


def _join(root: str | Path, name: str) -> str:
    return f"{str(root).rstrip('/')}/{name}"


def heldout_texts(data_dir: str | Path, cfg: BenchConfig) -> list[str]:
    """The corpus documents pretraining held out, in corpus order, at most `lm_max_docs`."""
    corpus = read_parquet(_join(data_dir, "corpus.parquet"))
    texts = [text for doc_id, text in zip(corpus["doc_id"].astype(str), corpus["text"], strict=True)
             if is_validation(doc_id, cfg.heldout_fraction, cfg.heldout_seed)]
    if not texts:
        raise ValueError(f"no held-out corpus documents at heldout_fraction={cfg.heldout_fraction}; raise it")
    return texts[: cfg.lm_max_docs]


Entry = dict[str, Any]  # one evaluated model: {"kind", "tasks": {task: task result}, ...}


def task_result(values: dict[str, Any], n: int, details: dict[str, Any] | None = None) -> Entry:
    """One task's numbers in the harness's summary shape (`TaskResult.as_dict`): each numeric metric's value and 95%
    interval (None: these evaluators keep no per-sample scores to bootstrap); anything else under `details`."""
    metrics = {key: {"value": float(value), "ci95": None}
               for key, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    details = {**{key: value for key, value in values.items() if key not in metrics}, **(details or {})}
    return {"n": n, "metrics": metrics, **({"details": details} if details else {})}


def _tool_task(result: dict[str, Any]) -> Entry:
    values = {key.removeprefix("tool_"): value for key, value in tool_metrics(result).items()}
    return task_result({k: v for k, v in values.items() if k not in ("tasks", "trials")}, int(result["tasks"]))


def evaluate_checkpoint(
    ckpt_dir: str | Path, tokenizer_dir: str | Path, data_dir: str | Path, cfg: BenchConfig
) -> dict[str, Entry]:
    """The pipeline's own tasks on one HF checkpoint folder: `heldout_lm` (val_loss, bits_per_byte), `math`
    (accuracy, ...) and `tool` (pass1, ...), each as `task_result`."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = K2ForCausalLM.from_pretrained(str(ckpt_dir)).to(device)
    model.eval()
    texts = heldout_texts(data_dir, cfg)
    lm = evaluate_lm(model, tokenizer, texts, cfg.lm_seq_len, cfg.lm_batch_size)
    problems = read_parquet(_join(data_dir, "math.parquet"))
    problems = problems[problems["split"] == "test"].head(cfg.math_max_problems).reset_index(drop=True)
    math = evaluate_math(model, tokenizer, problems, cfg.math_max_new_tokens, cfg.math_batch_size, cfg.reward_timeout_s)
    tool = evaluate_tool_use(model, tokenizer, read_parquet(_join(data_dir, "tool_tasks.parquet")),
                             max_turns=cfg.tool_max_turns, max_new_tokens=cfg.tool_max_new_tokens,
                             max_tasks=cfg.tool_max_tasks)
    return {
        "heldout_lm": task_result({"val_loss": lm["val_loss"], "bits_per_byte": lm["bits_per_byte"]}, len(texts),
                                  {"tokens": lm["tokens"], "bytes": lm["bytes"]}),
        "math": task_result({k.removeprefix("math_"): v for k, v in math.items() if k != "math_problems"},
                            int(math["math_problems"])),
        "tool": _tool_task(tool),
    }


def evaluate_tool_agent(llm: LLMConfig, data_dir: str | Path, cfg: BenchConfig) -> dict[str, Entry]:
    """The `tool` task (as for checkpoints) of a chat backend playing the agent."""
    tasks = read_parquet(_join(data_dir, "tool_tasks.parquet"))
    return {"tool": _tool_task(evaluate_agent(make_backend(llm), tasks, max_turns=cfg.tool_max_turns,
                                              max_tokens=cfg.tool_max_new_tokens, max_tasks=cfg.tool_max_tasks))}


def evaluate_harness(llm: LLMConfig, cfg: BenchConfig, samples_dir: str | Path, cache: SampleCache | None
                     ) -> dict[str, Entry]:
    """The public benchmarks of `cfg.harness` on one model, each task as `TaskResult.as_dict`; per-sample logs and
    summary.json in `samples_dir`."""
    if not cfg.harness.tasks:
        return {}
    results = run_suite(cfg.harness, make_backend(llm), samples_dir, cache, endpoint=llm.kind == "openai")
    return {name: result.as_dict() for name, result in results.items()}


def bench_metrics(tasks: dict[str, Entry]) -> dict[str, float]:
    """One model's scores as tracking metrics, the same keys for every model: `bench/<task>/<metric>`, and its
    interval as `bench/<task>/<metric>/ci95_low` and `.../ci95_high` where known."""
    out: dict[str, float] = {}
    for task, result in tasks.items():
        for metric, estimate in result["metrics"].items():
            key = f"bench/{task}/{metric}"
            out[key] = float(estimate["value"])
            if estimate.get("ci95"):
                out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = map(float, estimate["ci95"])
    return out


OnResult = Callable[[str, Entry], dict[str, Any] | None]


def run_bench(
    checkpoints: dict[str, str | Path],
    tokenizer_dir: str | Path,
    data_dir: str | Path,
    cfg: BenchConfig,
    on_result: OnResult | None = None,
    out_path: str | Path | None = None,
    samples_dir: str | Path = "reports/bench_samples",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate each named checkpoint (e.g. pretrain, sft, rl) on the pipeline's tasks and the harness's public
    benchmarks, and each of `cfg.tool_agents` on the tool task and the benchmarks, into
    `{"models": {name: {"kind": "checkpoint" | "backend", "path" | "backend", "tasks": {...},
    "samples_dir": ...}}}`; each model's per-sample logs go to `<samples_dir>/<name>/`.

    `on_result(name, entry)` is called as each model finishes (the bench stage logs it to MLflow there) and what it
    returns is added to the entry. The result is written to `out_path` as JSON when given. `cache_dir` keeps every
    benchmark answer, so a rerun after a crash generates only what is missing.
    """
    clash = sorted(set(cfg.tool_agents) & set(checkpoints))
    if clash:
        raise ValueError(f"bench.tool_agents {clash} reuse checkpoint names; rename them")
    cache = SampleCache(cache_dir) if cache_dir is not None else None
    models_to_run: list[tuple[str, Entry, LLMConfig, Callable[[], dict[str, Entry]]]] = [
        (name, {"kind": "checkpoint", "path": str(ckpt)},
         parse_llm_config({"kind": "k2", "path": str(ckpt), "device": "auto"}),
         lambda c=ckpt: evaluate_checkpoint(c, tokenizer_dir, data_dir, cfg)) for name, ckpt in checkpoints.items()]
    models_to_run += [(name, {"kind": "backend", "backend": llm.kind}, llm,
                       lambda llm=llm: evaluate_tool_agent(llm, data_dir, cfg))
                      for name, llm in cfg.tool_agents.items()]
    models: dict[str, Entry] = {}
    for name, entry, llm, own_tasks in tqdm(models_to_run, desc="bench", unit="model"):
        model_samples = Path(samples_dir) / name
        entry["tasks"] = {**own_tasks(), **evaluate_harness(llm, cfg, model_samples, cache)}
        entry["samples_dir"] = str(model_samples)
        if on_result is not None:
            entry.update(on_result(name, entry) or {})
        models[name] = entry
    results = {"models": models}
    if out_path is not None:
        write_json(results, out_path)
    return results
