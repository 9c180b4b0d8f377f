"""QK-Clip (Kimi K2 §2.1): after the optimizer step, rescale the unshared query/key weights of every head whose max
pre-softmax logit exceeded tau, so that head's logits are scaled by exactly gamma_h = tau / S_max^h.

Each attention layout says which rows carry which factor (``ClipsQK.qk_clip_rows``); this module only collects
S_max, reduces it over ranks and applies the factors:

* MLA (``MLAttention``): q^C rows (q_b_proj or q_proj) and k^C rows (kv_b_proj) by sqrt(gamma_h), q^R rows by
  gamma_h; the shared rotary key k^R, the value rows and o_proj untouched.
* MHA / GQA / MQA: see ``k2core.model.attention_variants``.

Rows of unclipped heads are never written, so a step with every head under tau is a bitwise no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from k2core.model.attention import MLAttention

# Called as hook(param, row_scale) after ``param`` (a weight matrix) had its rows multiplied by ``row_scale``, so a
# trainer can apply the same scaling to an fp32 master copy of that parameter (ZeRO / mixed precision).
RowScaleHook = Callable[[nn.Parameter, torch.Tensor], None]


@runtime_checkable
class ClipsQK(Protocol):
    """An attention module QK-Clip can act on: a per-head running max ``max_logit`` [H] (fp32, -inf when nothing
    was seen) and the rows that scale head h's logits by gamma[h]."""

    max_logit: torch.Tensor

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(weight, per-row factor [rows]) pairs; rows of heads with gamma == 1 get factor 1."""
        ...


class _MLARows:
    """The MLA rule for ``MLAttention``, which lives in k2core.model and does not implement ``ClipsQK`` itself."""

    def __init__(self, attn: MLAttention) -> None:
        self.attn = attn
        self.max_logit = attn.max_logit

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        attn = self.attn
        root = gamma.sqrt()[:, None]
        q_scale = torch.cat([root.expand(-1, attn.nope_dim), gamma[:, None].expand(-1, attn.rope_dim)], dim=1)
        kv_scale = torch.cat([root.expand(-1, attn.nope_dim), torch.ones_like(root).expand(-1, attn.v_dim)], dim=1)
        return [(attn.query_weight(), q_scale.flatten()), (attn.kv_b_proj.weight, kv_scale.flatten())]


def clip_layers(model: nn.Module) -> list[ClipsQK]:
    """Every attention layer of ``model`` in module order, as a ``ClipsQK``."""
    layers: list[ClipsQK] = []
    for module in model.modules():
        if isinstance(module, MLAttention):
            layers.append(_MLARows(module))
        elif isinstance(module, ClipsQK):
            layers.append(module)
    if not layers:
        raise ValueError("model has no attention layer QK-Clip knows (MLAttention, MHAttention, GQAttention)")
    return layers


def reset_clip_maxima(model: nn.Module) -> None:
    """Forget every layer's recorded maxima (start of a training step; ``apply_qk_clip`` does it too)."""
    for layer in clip_layers(model):
        layer.max_logit.fill_(float("-inf"))


def step_max_logits(model: nn.Module) -> list[torch.Tensor]:
    """Per-layer S_max [H_l] since the last reset, MAX-reduced over ranks when torch.distributed is initialised, so
    it covers the step's global batch (all micro-batches of all data-parallel ranks)."""
    maxima = [layer.max_logit.float() for layer in clip_layers(model)]
    flat = torch.cat(maxima)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.MAX)
    return list(flat.split([m.numel() for m in maxima]))


@torch.no_grad()
def apply_qk_clip(model: nn.Module, tau: float, on_scale: RowScaleHook | None = None) -> dict[str, object]:
    """Clip every head with S_max^h > tau in place, then reset the recorded maxima for the next step.

    Returns ``num_clipped``, ``clipped_fraction`` (over all heads of all layers), ``max_logit_per_layer``,
    ``global_max_logit`` (these describe the step *before* the clip).
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    layers = clip_layers(model)
    s_max = step_max_logits(model)
    num_clipped = 0
    for layer, s in zip(layers, s_max):
        clipped = s > tau
        num_clipped += int(clipped.sum())
        if not clipped.any():
            continue
        gamma = torch.where(clipped, tau / s, torch.ones_like(s))
        for weight, scale in layer.qk_clip_rows(gamma):
            row_scale = scale.to(device=weight.device, dtype=torch.float32)
            rows = (row_scale != 1).nonzero().flatten()
            weight[rows] = (weight[rows].float() * row_scale[rows, None]).to(weight.dtype)
            if on_scale is not None:
                on_scale(weight, row_scale)
    reset_clip_maxima(model)
    per_layer = torch.stack([s.max() for s in s_max])
    return {
        "num_clipped": num_clipped,
        "clipped_fraction": num_clipped / sum(s.numel() for s in s_max),
        "max_logit_per_layer": per_layer.tolist(),
        "global_max_logit": float(per_layer.max()),
    }
