"""Run settings for pretraining and SFT; every recipe value comes from a params.yaml profile."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    zero_stage: int = Field(ge=0, le=3)
    gradient_clipping: float = Field(ge=0, description="global norm of raw gradients; 0 disables")
    val_fraction: float = Field(gt=0, lt=1, description="share of documents/examples held out for eval loss")
    seed: int

    @field_validator("zero_stage")
    @classmethod
    def _stage_zero_only(cls, stage: int) -> int:
        # Why not ZeRO-1/2/3 (notes/muonclip.md §3.3): a generic client optimizer gets flat 1-D partitions that
        # Newton-Schulz cannot orthogonalise; DeepSpeed's own Muon path runs Newton-Schulz inside the gradient
        # reduction, before the step, so the raw gradient can no longer be clipped before momentum and its
        # clipping rescales the orthogonalised update; its update scale (sqrt(max(1, n/m))) and Gram NS also
        # differ from K2's. Stage 0 data parallelism is exact: gradients are all-reduced, clipped raw, then Muon.
        if stage != 0:
            raise ValueError(
                f"zero_stage={stage} is not supported with k2's Muon: DeepSpeed ZeRO-1/2/3 either hand the "
                "optimizer flat 1-D gradient partitions (Newton-Schulz needs whole matrices) or, on DeepSpeed's "
                "own Muon path, clip the orthogonalised update instead of the raw gradient; set zero_stage: 0 "
                "(plain data parallelism, exact MuonClip; see docs/distributed.md)"
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
