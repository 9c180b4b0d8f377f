"""QK-Clip (Kimi K2 §2.1): after the optimizer step, rescale the unshared query/key weights of every head whose max
pre-softmax logit exceeded tau, so that head's logits are scaled by exactly gamma_h = tau / S_max^h.

Each attention layout says which rows carry which factor (``ClipsQK.qk_clip_rows``); this module only collects
S_max, reduces it over ranks and applies the factors:

* MLA (``k2core.model.attention.MLAttention``): q^C rows (q_b_proj or q_proj) and k^C rows (kv_b_proj) by
  sqrt(gamma_h), q^R rows by gamma_h; the shared rotary key k^R, the value rows and o_proj untouched.
* MHA / GQA / MQA: see ``k2core.model.attention_variants``.

The attention modules implement ``ClipsQK`` structurally (k2core.model never imports k2core.optim).

Rows of unclipped heads are never written, so a step with every head under tau is a bitwise no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

# Called as hook(param, row_scale) after ``param`` (a weight matrix) had its rows multiplied by ``row_scale``, so a
# trainer can apply the same scaling to an fp32 master copy of that parameter (ZeRO / mixed precision).
RowScaleHook = Callable[[nn.Parameter, torch.Tensor], None]


@runtime_checkable
class ClipsQK(Protocol):
    """An attention module QK-Clip can act on: a per-head running max ``max_logit`` [H] (fp32, -inf when nothing
    was seen) and the rows that scale head h's logits by gamma[h]."""

    max_logit: torch.Tensor

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(weight or bias, per-row factor [rows]) pairs; rows of heads with gamma == 1 get factor 1."""
        ...


def clip_layers(model: nn.Module) -> list[ClipsQK]:
    """Every attention layer of ``model`` (``MLAttention``, ``MHAttention``, ``GQAttention`` or any other
    ``ClipsQK``) in module order."""
    # The class-level test first: a Protocol isinstance on every module (MLPs, norms, experts) costs milliseconds.
    layers = [module for module in model.modules()
              if callable(getattr(type(module), "qk_clip_rows", None)) and isinstance(module, ClipsQK)]
    if not layers:
        raise ValueError("model has no attention layer QK-Clip knows (a module with max_logit and qk_clip_rows, "
                         "e.g. MLAttention, MHAttention, GQAttention)")
    return layers


def _reset(layers: list[ClipsQK]) -> None:
    for layer in layers:
        layer.max_logit.fill_(float("-inf"))


def _reduced_maxima(layers: list[ClipsQK]) -> list[torch.Tensor]:
    maxima = [layer.max_logit.float() for layer in layers]
    flat = torch.cat(maxima)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.MAX)
    return list(flat.split([m.numel() for m in maxima]))


def reset_clip_maxima(model: nn.Module) -> None:
    """Forget every layer's recorded maxima (start of a training step; ``apply_qk_clip`` does it too)."""
    _reset(clip_layers(model))


def step_max_logits(model: nn.Module) -> list[torch.Tensor]:
    """Per-layer S_max [H_l] since the last reset, MAX-reduced over ranks when torch.distributed is initialised, so
    it covers the step's global batch (all micro-batches of all data-parallel ranks)."""
    return _reduced_maxima(clip_layers(model))


@torch.no_grad()
def apply_qk_clip(model: nn.Module, tau: float, on_scale: RowScaleHook | None = None) -> dict[str, object]:
    """Clip every head with S_max^h > tau in place, then reset the recorded maxima for the next step.

    Returns ``num_clipped``, ``clipped_fraction`` (over all heads of all layers), ``max_logit_per_layer``,
    ``global_max_logit`` (these describe the step *before* the clip).
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    layers = clip_layers(model)
    s_max = _reduced_maxima(layers)
    counts = torch.stack([(s > tau).sum() for s in s_max]).tolist()  # one device sync for all layers
    for layer, s, count in zip(layers, s_max, counts):
        if count == 0:
            continue
        gamma = torch.where(s > tau, tau / s, torch.ones_like(s))
        for weight, scale in layer.qk_clip_rows(gamma):
            row_scale = scale.to(device=weight.device, dtype=torch.float32)
            rows = (row_scale != 1).nonzero().flatten()
            factor = row_scale[rows].view(-1, *(1,) * (weight.dim() - 1))  # a matrix's rows or a bias's entries
            weight[rows] = (weight[rows].float() * factor).to(weight.dtype)
            if on_scale is not None:
                on_scale(weight, row_scale)
    _reset(layers)
    per_layer = torch.stack([s.max() for s in s_max]).tolist()
    return {
        "num_clipped": sum(counts),
        "clipped_fraction": sum(counts) / sum(s.numel() for s in s_max),
        "max_logit_per_layer": per_layer,
        "global_max_logit": max(per_layer),
    }
