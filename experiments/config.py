"""Typed views of experiments/params.yaml, one model per section (extra="forbid", so typos fail loudly)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from k2core.data.corpus import CorpusConfig
from k2core.data.tokenizer import TokenizerConfig

HERE = Path(__file__).resolve().parent
PARAMS = HERE / "params.yaml"
Optimizer = Literal["muon", "muonclip", "adamw"]


class DataConfig(BaseModel):
    """Corpus and tokenizer built once for both experiments."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    val_fraction: float = Field(gt=0, lt=1)
    corpus: CorpusConfig
    tokenizer: TokenizerConfig


class RunConfig(BaseModel):
    """One training run: optimizer, schedule, batch shape and how often to measure validation loss."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Optimizer
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    tau: float = Field(gt=0)  # used by "muonclip" only
    seed: int
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    warmup_fraction: float = Field(ge=0, le=1)
    decay_fraction: float = Field(ge=0, le=1)
    final_lr_fraction: float = Field(ge=0, le=1)


class _Shared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    seq_len: int = Field(ge=2)
    weight_decay: float = Field(ge=0)
    tau: float = Field(gt=0)
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    warmup_fraction: float = Field(ge=0, le=1)
    decay_fraction: float = Field(ge=0, le=1)
    final_lr_fraction: float = Field(ge=0, le=1)

    def run(self, optimizer: Optimizer, lr: float) -> RunConfig:
        """The RunConfig of one arm of this experiment."""
        shared = self.model_dump(include=set(_Shared.model_fields) - {"seq_len"})
        return RunConfig(optimizer=optimizer, lr=lr, **shared)


class LogitExplosionConfig(_Shared):
    """Vanilla Muon and MuonClip at one aggressive lr; tau is the cap (K2 used 100, its ablation 30)."""

    lr: float = Field(gt=0)


class TokenEfficiencyConfig(_Shared):
    """MuonClip against AdamW, each at the best lr of a small sweep."""

    muonclip_lrs: list[float] = Field(min_length=1)
    adamw_lrs: list[float] = Field(min_length=1)
    budget_fractions: list[float] = Field(min_length=1)  # shorter MuonClip runs, as fractions of `steps`

    def budget_run(self, lr: float, fraction: float) -> RunConfig:
        """A MuonClip run of round(fraction * steps) steps with its own schedule, evaluated at start and end."""
        if not 0 < fraction < 1:
            raise ValueError(f"budget fractions must lie in (0, 1), got {fraction}")
        steps = max(1, round(fraction * self.steps))
        return RunConfig(**{**self.run("muonclip", lr).model_dump(), "steps": steps, "eval_every": steps})


def load_params(path: Path = PARAMS) -> dict:
    """The raw params.yaml (DVC tracks the same file)."""
    return yaml.safe_load(path.read_text())
