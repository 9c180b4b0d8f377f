"""What skipping a step with a NaN or inf loss or gradient needs, shared by the Muon loop and the RL update."""

from __future__ import annotations

import math

import torch

from k2core.model import reset_max_logits
from k2core.model.moe import TopKRouter


def gradients_finite(model: torch.nn.Module) -> bool:
    """Whether every gradient on `model` is finite (one fused norm: inf or NaN anywhere makes it non-finite)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or math.isfinite(torch.nn.utils.get_total_norm(grads).item())


def drop_step_statistics(model: torch.nn.Module) -> None:
    """Forget what a skipped step's forward passes recorded (MoE expert loads, per-head max logits), so the next
    router-bias update and QK-Clip see only steps that were applied."""
    for module in model.modules():
        if isinstance(module, TopKRouter):
            module.expert_load.zero_()
    reset_max_logits(model)
