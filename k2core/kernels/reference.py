"""Pure-torch max logit: the definition the C++ and CUDA kernels are tested against, and the fallback when they
cannot be built. Works through query chunks so no more than about ``chunk_elements`` logits exist at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# (q [B, H, T, d], k [B, H or 1, T, d]) pairs whose dot products add up to the logit.
Pieces = Sequence[tuple[Tensor, Tensor]]


@torch.no_grad()
def max_logit_reference(pieces: Pieces, scale: float, key_mask: Tensor | None = None,
                        chunk_elements: int = 1 << 22) -> Tensor:
    """Per-head max over the batch and all pairs j <= i (with ``key_mask[b, j]`` set) of ``scale * sum_p q_p . k_p``.

    Computed in fp32 whatever the input dtype; -inf for heads with no counted pair; NaN wins, as in ``amax``.
    """
    q0 = pieces[0][0]
    batch, heads, seq = q0.shape[:3]
    best = torch.full((heads,), float("-inf"), dtype=torch.float32, device=q0.device)
    if batch == 0 or heads == 0 or seq == 0:
        return best
    full = [(q.float(), k.float()) for q, k in pieces]
    rows = max(1, min(seq, chunk_elements // (batch * heads * seq)))
    positions = torch.arange(seq, device=q0.device)
    for i0 in range(0, seq, rows):
        i1 = min(seq, i0 + rows)
        logits = sum(q[:, :, i0:i1] @ k[:, :, :i1].transpose(-1, -2) for q, k in full) * scale
        allowed = (positions[None, :i1] <= positions[i0:i1, None])[None, None]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :i1].bool()
        best = torch.maximum(best, logits.masked_fill(~allowed, float("-inf")).amax(dim=(0, 2, 3)))
    return best


@torch.no_grad()
def attention_max_logit_reference(q: Tensor, k: Tensor, v: Tensor, scale: float, key_mask: Tensor | None = None
                                  ) -> tuple[Tensor, Tensor]:
    """Causal attention output [B, H, T, Dv] (fp32; zero for a query with no allowed key) and the per-head max logit
    [H] over the allowed pairs, from materialised fp32 logits: the definition the fused kernel is tested against."""
    seq = q.shape[2]
    logits = q.float() @ k.float().transpose(-1, -2) * scale
    allowed = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    logits = logits.masked_fill(~allowed, float("-inf"))
    heads = q.shape[1]
    best = logits.amax(dim=(0, 2, 3)) if logits.numel() else torch.full((heads,), float("-inf"), device=q.device)
    probs = torch.softmax(logits, dim=-1)
    probs = torch.where(allowed.any(dim=-1, keepdim=True), probs, 0.0)  # softmax of an all -inf row is NaN
    return probs @ v.float(), best
