"""What both experiment stages share: loading the prepared data and model config, writing outputs, MLflow."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from k2core.model import K2Config
from k2core.tracking.mlflow_tracker import open_run
from k2core.train.data import TokenBlocks

from experiments.config import HERE, DataConfig, load_params
from experiments.data import load_blocks, model_config

RESULTS = HERE / "results"


@dataclass(frozen=True)
class Setup:
    """Blocks of one sequence length and the model config (vocabulary from the tokenizer)."""

    train: TokenBlocks
    val: TokenBlocks
    model: K2Config


def load_setup(seq_len: int, params: dict[str, Any] | None = None) -> Setup:
    """Read the `prepare` stage's corpus and tokenizer; training uses one CPU thread per process."""
    torch.set_num_threads(1)
    params = params or load_params()
    train, val, vocab = load_blocks(HERE / "data", seq_len, DataConfig(**params["data"]))
    return Setup(train, val, model_config(params["model"], vocab))


def write_metrics(stage: str, metrics: dict[str, Any]) -> Path:
    """results/<stage>/metrics.json (a DVC metrics file); non-finite numbers (a diverged run) become null."""
    metrics = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    path = RESULTS / stage / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def log_run(stage: str, params: dict[str, Any], metrics: dict[str, Any],
            history: dict[int, dict[str, float]], artifacts: list[Path]) -> str:
    """One MLflow run in experiment "k2" tagged k2.stage=<stage>: params, per-step history, final metrics, files."""
    with open_run(stage, {"k2.stage": stage}, root=HERE.parent) as run:
        run.log_params(params)
        for step, values in sorted(history.items()):
            run.log_metrics(values, step=step)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        for path in artifacts:
            run.log_artifact(path)
        return run.run_id
