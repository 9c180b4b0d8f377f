"""Run settings for pretraining and SFT; every recipe value comes from a params.yaml profile."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from k2core.train.precision import Autocast


class LoopConfig(BaseModel):
    """Settings shared by every Muon training loop (pretraining, SFT)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1, description="optimizer steps (each = gradient_accumulation micro-batches per rank)")
    micro_batch_size: int = Field(ge=1)
    gradient_accumulation: int = Field(ge=1)
    seq_len: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, le=1)
    decay_fraction: float = Field(ge=0, le=1)
    final_lr_fraction: float = Field(ge=0, le=1, description="lr at the end of the decay, as a fraction of lr")
    decay_shape: Literal["cosine", "linear"]
    qk_clip_tau: float = Field(gt=0, description="QK-Clip threshold on per-head max logits (K2: 100)")
    muon_ns_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Muon's Newton-Schulz precision: auto = bf16 where a probe finds bf16 matmuls fast, "
        "else fp32 (k2core/optim/ns_precision.py)")
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    zero_stage: int = Field(ge=0, le=3)
    gradient_clipping: float = Field(ge=0, description="global norm of raw gradients; 0 disables")
    autocast: Autocast = Field(
        "auto", description="bf16 autocast of the forward/backward (fp32 master weights): auto = on for CUDA and for "
        "CPUs with native bf16 (avx512_bf16/amx_bf16), off elsewhere (k2core/train/precision.py)")
    val_fraction: float = Field(gt=0, lt=1, description="share of documents/examples held out for eval loss")
    max_consecutive_skipped_steps: int = Field(
        ge=1, description="steps in a row whose loss or gradient is NaN/inf (each skipped) that stop the stage")
    seed: int

    @field_validator("zero_stage")
    @classmethod
    def _no_stage_three(cls, stage: int) -> int:
        # Stages 0-2 are exact with k2's Muon (k2core/train/zero.py binds its flat partitions to whole matrices).
        # Stage 3 also partitions the weights and runs its own optimizer wrapper, which Muon is not bound to.
        if stage == 3:
            raise ValueError(
                "zero_stage=3 is not supported with k2's Muon: ZeRO-3 partitions the weights themselves and its "
                "optimizer wrapper gives Muon no way to see whole matrices; use zero_stage 1 or 2 to partition the "
                "optimizer state and gradients (docs/distributed.md)"
            )
        return stage

    @model_validator(mode="after")
    def _phases_fit(self) -> "LoopConfig":
        if self.warmup_fraction + self.decay_fraction > 1:
            raise ValueError("warmup_fraction + decay_fraction must not exceed 1")
        return self


class PretrainConfig(LoopConfig):
    """Pretraining on the packed text corpus with MuonClip."""


class SFTConfig(LoopConfig):
    """Chat-format supervised fine-tuning with Muon, loss on assistant tokens only."""
