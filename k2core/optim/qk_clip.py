"""QK-Clip for MLA (Kimi K2 §2.1): after the optimizer step, rescale the unshared query/key weights of every head
whose max pre-softmax logit exceeded tau, so that head's logits are scaled by exactly gamma_h = tau / S_max^h.

Per clipped head h: q^C rows (in q_b_proj or q_proj) and k^C rows (in kv_b_proj) get sqrt(gamma_h), q^R rows get
gamma_h; the shared rotary key k^R, the value rows, o_proj and all other heads are left bitwise untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from k2core.model.attention import MLAttention
from k2core.model.modeling import max_logits, reset_max_logits

# Called as hook(param, row_scale) after ``param`` (a weight matrix) had its rows multiplied by ``row_scale``, so a
# trainer can apply the same scaling to an fp32 master copy of that parameter (ZeRO / mixed precision).
RowScaleHook = Callable[[nn.Parameter, torch.Tensor], None]


def _row_scales(attn: MLAttention, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row factors for the query matrix [H*(d_C+d_R)] and kv_b_proj [H*(d_C+d_v)] from per-head gamma [H]."""
    root = gamma.sqrt()[:, None]
    q_scale = torch.cat([root.expand(-1, attn.nope_dim), gamma[:, None].expand(-1, attn.rope_dim)], dim=1)
    kv_scale = torch.cat([root.expand(-1, attn.nope_dim), torch.ones_like(root).expand(-1, attn.v_dim)], dim=1)
    return q_scale.flatten(), kv_scale.flatten()


@torch.no_grad()
def apply_qk_clip(model: nn.Module, tau: float, on_scale: RowScaleHook | None = None) -> dict[str, object]:
    """Clip every head with S_max^h > tau in place, then reset the recorded maxima for the next step.

    S_max comes from the model's training forwards since the last reset (see ``k2core.model.max_logits``); with
    torch.distributed initialised it is MAX-reduced over ranks first so every replica clips identically. Rows of
    unclipped heads are never written. Returns ``num_clipped``, ``clipped_fraction``, ``max_logit_per_layer``,
    ``global_max_logit`` (these describe the step *before* the clip).
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    attns = [m for m in model.modules() if isinstance(m, MLAttention)]
    s_max = max_logits(model)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(s_max, op=torch.distributed.ReduceOp.MAX)
    clipped = s_max > tau
    for layer, attn in enumerate(attns):
        heads = clipped[layer].nonzero().flatten()
        if heads.numel() == 0:
            continue
        gamma = torch.ones_like(s_max[layer])
        gamma[heads] = tau / s_max[layer, heads]
        q_scale, kv_scale = _row_scales(attn, gamma)
        q_rows = (q_scale != 1).nonzero().flatten()
        kv_rows = (kv_scale != 1).nonzero().flatten()
        for weight, rows, scale in ((attn.query_weight(), q_rows, q_scale), (attn.kv_b_proj.weight, kv_rows, kv_scale)):
            row_scale = scale.to(device=weight.device, dtype=torch.float32)
            rows = rows.to(weight.device)
            weight[rows] = (weight[rows].float() * row_scale[rows, None]).to(weight.dtype)
            if on_scale is not None:
                on_scale(weight, row_scale)
    reset_max_logits(model)
    per_layer = s_max.amax(dim=1)
    return {
        "num_clipped": int(clipped.sum()),
        "clipped_fraction": float(clipped.float().mean()),
        "max_logit_per_layer": per_layer.tolist(),
        "global_max_logit": float(per_layer.max()),
    }
