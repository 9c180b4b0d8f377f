"""Fused causal attention forward that also returns QK-Clip's per-head max logit, computed in the same pass (CPU).

The running row max an online softmax keeps anyway is each query's max logit, so S_max is free here, where the
model's training path pays one extra pass over q.k with ``max_logit``. Forward only (no autograd): it serves
forwards that need no gradient, and the forward half of a training path would need a matching backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from k2core.kernels.build import kernel_op
from k2core.kernels.max_logit import _check, _for_kernel
from k2core.kernels.reference import attention_max_logit_reference


def attention_max_logit(q: Tensor, k: Tensor, v: Tensor, scale: float, key_mask: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
    """Causal ``softmax(scale * q k^T) v`` [B, H, T, Dv] in q's dtype and the per-head max logit [H] (fp32) over the
    same allowed pairs (j <= i, and ``key_mask[b, j]`` when given), like ``max_logit``.

    q [B, H, T, D]; k [B, H or 1, T, D]; v [B, H or 1, T, Dv] with as many heads as k. A query with no allowed key
    (left padding) gets a zero output. The C++ kernel serves CPU tensors; elsewhere, or when it cannot be built, the
    materialising torch reference runs.
    """
    _check([(q, k)], key_mask)
    if v.dim() != 4 or v.shape[0] != q.shape[0] or v.shape[2] != q.shape[2] or v.shape[1] != k.shape[1]:
        raise ValueError(f"v must be [B, {k.shape[1]}, T, Dv] matching k {tuple(k.shape)}, got {tuple(v.shape)}")
    op = kernel_op("cpp") if q.device.type == "cpu" else None
    if op is None:
        out, best = attention_max_logit_reference(q, k, v, scale, key_mask)
        return out.to(q.dtype), best
    [(q32, k32), (v32, _)] = _for_kernel([(q, k), (v, v)])
    batch, heads, seq, _ = q.shape
    out = torch.empty(batch, heads, seq, v.shape[3], dtype=torch.float32)
    best = torch.empty(heads, dtype=torch.float32)
    mask = None if key_mask is None else key_mask.detach().bool()
    with torch.no_grad():
        torch.ops.k2_kernels.attention_cpu(q32, k32, v32, mask, float(scale), out, best)
    return out.to(q.dtype), best
