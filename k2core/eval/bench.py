"""One benchmark over the pipeline's checkpoints (pretrain, SFT, RL), written as a single metrics JSON.

Per checkpoint: validation loss and bits per byte on the pretraining stage's held-out corpus
documents (same hash split as `k2core.train.data.pack_corpus`, so set `heldout_fraction` and
`heldout_seed` to pretrain's `val_fraction` and `seed`), greedy accuracy on the held-out math
problems (split "test"), and pass^1 on the tool-environment test tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from k2core.eval.lm import evaluate_lm
from k2core.eval.math import evaluate_math
from k2core.eval.tool_env import evaluate_agent, evaluate_tool_use, tool_metrics
from k2core.llm import LLMConfig, make_backend
from k2core.model import K2ForCausalLM
from k2core.storage import read_parquet, write_json
from k2core.tracking import Tracker
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


def evaluate_checkpoint(
    ckpt_dir: str | Path, tokenizer_dir: str | Path, data_dir: str | Path, cfg: BenchConfig
) -> dict[str, Any]:
    """All benchmark metrics of one HF checkpoint folder (tool-use ones prefixed `tool_`, pass^1 is `tool_pass1`)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = K2ForCausalLM.from_pretrained(str(ckpt_dir)).to(device)
    model.eval()
    texts = heldout_texts(data_dir, cfg)
    metrics: dict[str, Any] = evaluate_lm(model, tokenizer, texts, cfg.lm_seq_len, cfg.lm_batch_size)
    problems = read_parquet(_join(data_dir, "math.parquet"))
    problems = problems[problems["split"] == "test"].head(cfg.math_max_problems).reset_index(drop=True)
    metrics.update(evaluate_math(model, tokenizer, problems, cfg.math_max_new_tokens, cfg.math_batch_size,
                                 cfg.reward_timeout_s))
    tool = evaluate_tool_use(model, tokenizer, read_parquet(_join(data_dir, "tool_tasks.parquet")),
                             max_turns=cfg.tool_max_turns, max_new_tokens=cfg.tool_max_new_tokens,
                             max_tasks=cfg.tool_max_tasks)
    return {**metrics, **tool_metrics(tool)}


def evaluate_tool_agent(llm: LLMConfig, data_dir: str | Path, cfg: BenchConfig) -> dict[str, Any]:
    """Tool-use metrics (`tool_` prefixed, as for checkpoints) of a chat backend playing the agent."""
    tasks = read_parquet(_join(data_dir, "tool_tasks.parquet"))
    return tool_metrics(evaluate_agent(make_backend(llm), tasks, max_turns=cfg.tool_max_turns,
                                       max_tokens=cfg.tool_max_new_tokens, max_tasks=cfg.tool_max_tasks))


def run_bench(
    checkpoints: dict[str, str | Path],
    tokenizer_dir: str | Path,
    data_dir: str | Path,
    cfg: BenchConfig,
    tracker: Tracker | None = None,
    out_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate each named checkpoint (e.g. pretrain, sft, rl), and each of `cfg.tool_agents` on the tool tasks, into
    `{name: metrics}`.

    The result is logged to `tracker` (numbers as `NAME/metric`, the whole as `bench.json`) and written
    to `out_path` as JSON when given.
    """
    clash = sorted(set(cfg.tool_agents) & set(checkpoints))
    if clash:
        raise ValueError(f"bench.tool_agents {clash} reuse checkpoint names; rename them")
    results: dict[str, Any] = {}
    jobs = [(name, lambda c=ckpt: evaluate_checkpoint(c, tokenizer_dir, data_dir, cfg)) for name, ckpt in
            checkpoints.items()]
    jobs += [(name, lambda llm=llm: evaluate_tool_agent(llm, data_dir, cfg)) for name, llm in cfg.tool_agents.items()]
    for name, job in tqdm(jobs, desc="bench", unit="model"):
        results[name] = job()
        if tracker is not None:
            tracker.log_metrics({f"{name}/{key}": float(value) for key, value in results[name].items()
                                 if isinstance(value, (int, float))})
    if tracker is not None:
        tracker.log_dict(results, "bench.json")
    if out_path is not None:
        write_json(results, out_path)
    return results
