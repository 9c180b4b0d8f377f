"""Per-head max pre-softmax logit (the S_max of QK-Clip) without materialising the [T, T] logits.

Dispatches to the CUDA kernel for CUDA tensors, the C++ kernel for CPU tensors, and to the pure-torch reference
when the matching extension cannot be built (see ``k2core.kernels.build``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from k2core.kernels.build import Kind, kernel_op
from k2core.kernels.reference import Pieces, max_logit_reference

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _kind(device: torch.device) -> Kind | None:
    return {"cpu": "cpp", "cuda": "cuda"}.get(device.type)  # type: ignore[return-value]


def backend(device: torch.device | str | None = None) -> str:
    """Which implementation serves ``device`` (default: CUDA when available, else CPU): ``cpp``, ``cuda`` or ``torch``.

    Builds the extension if it was not built yet, so the answer is what the next call will really run.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = _kind(torch.device(device))
    return kind if kind is not None and kernel_op(kind) is not None else "torch"


def _check(pieces: Pieces, key_mask: Tensor | None) -> None:
    q0 = pieces[0][0]
    if q0.dim() != 4:
        raise ValueError(f"q must be [B, H, T, D], got shape {tuple(q0.shape)}")
    batch, heads, seq = q0.shape[:3]
    for q, k in pieces:
        if q.dim() != 4 or k.dim() != 4:
            raise ValueError(f"q and k must be 4-D [B, H, T, D], got {tuple(q.shape)} and {tuple(k.shape)}")
        if q.shape[:3] != (batch, heads, seq):
            raise ValueError(f"query pieces disagree on [B, H, T]: {tuple(q.shape)} vs {tuple(q0.shape)}")
        if k.shape[0] != batch or k.shape[2] != seq or k.shape[1] not in (1, heads):
            raise ValueError(f"k must be [B, H, T, D] or [B, 1, T, D] matching q {tuple(q.shape)}, "
                             f"got {tuple(k.shape)}")
        if q.shape[3] != k.shape[3]:
            raise ValueError(f"q and k widths differ: {q.shape[3]} vs {k.shape[3]}")
        for t in (q, k):
            if not t.is_floating_point():
                raise TypeError(f"q and k must be floating point, got {t.dtype}")
            if t.device != q0.device:
                raise ValueError(f"all inputs must be on one device, got {t.device} and {q0.device}")
    if key_mask is not None and (key_mask.shape != (batch, seq) or key_mask.device != q0.device):
        raise ValueError(f"key_mask must be [B, T] = {(batch, seq)} on {q0.device}, got {tuple(key_mask.shape)} "
                         f"on {key_mask.device}")


def _for_kernel(pieces: Pieces) -> list[tuple[Tensor, Tensor]]:
    """One kernel dtype for all pieces (fp32 or bf16, else fp32) and a contiguous last dimension."""
    dtypes = {t.dtype for pair in pieces for t in pair}
    dtype = dtypes.pop() if len(dtypes) == 1 and dtypes <= set(_KERNEL_DTYPES) else torch.float32

    def ready(t: Tensor) -> Tensor:
        t = t.detach().to(dtype)
        return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()

    return [(ready(q), ready(k)) for q, k in pieces]


def _max_logit(pieces: Pieces, scale: float, key_mask: Tensor | None) -> Tensor:
    _check(pieces, key_mask)
    device = pieces[0][0].device
    kind = _kind(device)
    op = kernel_op(kind) if kind is not None else None
    if op is None:
        return max_logit_reference(pieces, scale, key_mask)
    (q1, k1), *rest = _for_kernel(pieces)
    q2, k2 = rest[0] if rest else (None, None)
    mask = None if key_mask is None else key_mask.detach().bool()
    out = torch.empty(q1.shape[1], dtype=torch.float32, device=device)
    with torch.no_grad():
        op(q1, k1, q2, k2, mask, float(scale), out)
    return out


def max_logit(q: Tensor, k: Tensor, scale: float, key_mask: Tensor | None = None) -> Tensor:
    """Per-head causal max of ``scale * q_i . k_j`` over the batch and all pairs j <= i: fp32 [H].

    q is [B, H, T, D]; k is [B, H, T, D] or [B, 1, T, D] (one key shared by every head). ``key_mask`` [B, T]
    (True = real token) additionally drops padded keys, like the model's attention mask. -inf for a head with no
    counted pair. Not differentiable: S_max is a statistic, not part of the loss.
    """
    return _max_logit([(q, k)], scale, key_mask)


def max_logit_mla(q_nope: Tensor, q_rope: Tensor, k_nope: Tensor, k_rope: Tensor, scale: float,
                  key_mask: Tensor | None = None) -> Tensor:
    """``max_logit`` for MLA's split heads, logit = scale * (q^C . k^C + q^R . k^R), without concatenating them.

    q_nope [B, H, T, d_C], q_rope [B, H, T, d_R], k_nope [B, H, T, d_C], k_rope [B, 1, T, d_R] (the rotary key
    shared by all heads; a per-head [B, H, T, d_R] works too).
    """
    return _max_logit([(q_nope, k_nope), (q_rope, k_rope)], scale, key_mask)
