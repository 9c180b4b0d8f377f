"""One single-process training run of the library's K2 model with Muon, MuonClip or AdamW.

All three arms share the model, data order, schedule and parameter split (`muon_param_groups`); they differ only in
the optimizer rule for the hidden matrices: Muon (k2core.optim.Muon), Muon followed by `apply_qk_clip` after every
step (MuonClip, K2 Alg. 1), or AdamW (the same optimizer with every group on its AdamW path, so embeddings and
norms are updated identically in all arms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from k2core.model import K2Config, K2ForCausalLM, max_logits
from k2core.optim import Muon, apply_qk_clip
from k2core.optim.param_groups import muon_param_groups
from k2core.optim.qk_clip import reset_clip_maxima
from k2core.optim.schedule import wsd_from_fractions
from k2core.train.data import TokenBlocks, batch_indices

from experiments.config import RunConfig


@dataclass
class RunResult:
    """Per-step training records and periodic validation losses of one run."""

    config: RunConfig
    tokens_per_step: int
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    max_logit: list[float] = field(default_factory=list)  # S_max over all heads, measured in this step's forward
    clipped_fraction: list[float] = field(default_factory=list)  # heads QK-Clip rescaled after this step
    eval_steps: list[int] = field(default_factory=list)  # steps completed before each validation
    val_loss: list[float] = field(default_factory=list)

    @property
    def eval_tokens(self) -> list[int]:
        return [step * self.tokens_per_step for step in self.eval_steps]

    @property
    def diverged(self) -> bool:
        return not all(math.isfinite(x) for x in self.loss)


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> Muon:
    """Muon (+ AdamW fallback) for "muon"/"muonclip"; every group on the AdamW path for "adamw"."""
    groups = muon_param_groups(model, cfg.lr, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        groups = [{**group, "use_muon": False} for group in groups]
    return Muon(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def validation_loss(model: K2ForCausalLM, val: TokenBlocks, batches: int, batch_size: int) -> float:
    """Mean loss over the first `batches` validation batches (the same ones at every evaluation)."""
    model.eval()
    n = min(len(val), batches * batch_size)
    losses = [model(*_inputs(val, torch.arange(start, min(start + batch_size, n)))).loss.item()
              for start in range(0, n, batch_size)]
    model.train()
    return sum(losses) / len(losses)


def _inputs(blocks: TokenBlocks, indices: torch.Tensor) -> tuple[torch.Tensor, None, None, None, bool, torch.Tensor]:
    ids, labels = blocks.batch(indices)
    return ids, None, None, None, False, labels


def train(model_cfg: K2Config, train_blocks: TokenBlocks, val: TokenBlocks, cfg: RunConfig) -> RunResult:
    """Train from a seeded init; every arm with the same seed starts from the same weights and sees the same batches.

    A run whose loss turns non-finite stops there (its records end at that step).
    """
    torch.manual_seed(cfg.seed)
    model = K2ForCausalLM(model_cfg)
    model.train()
    optimizer = build_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, wsd_from_fractions(cfg.steps, cfg.warmup_fraction, cfg.decay_fraction, cfg.final_lr_fraction))
    seq_len = train_blocks.input_ids.shape[1]
    result = RunResult(config=cfg, tokens_per_step=cfg.batch_size * seq_len)
    for step in range(cfg.steps):
        if step % cfg.eval_every == 0:
            result.eval_steps.append(step)
            result.val_loss.append(validation_loss(model, val, cfg.eval_batches, cfg.batch_size))
        reset_clip_maxima(model)
        indices = batch_indices(len(train_blocks), step * cfg.batch_size, cfg.batch_size, cfg.seed)
        loss = model(*_inputs(train_blocks, indices)).loss
        result.steps.append(step)
        result.loss.append(loss.item())
        if not math.isfinite(result.loss[-1]):
            return result
        result.max_logit.append(float(max_logits(model).max()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        clipped = apply_qk_clip(model, cfg.tau)["clipped_fraction"] if cfg.optimizer == "muonclip" else 0.0
        result.clipped_fraction.append(float(clipped))
    result.eval_steps.append(cfg.steps)
    result.val_loss.append(validation_loss(model, val, cfg.eval_batches, cfg.batch_size))
    return result
