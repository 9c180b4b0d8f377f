"""Plain multi-head (MHA) and grouped-query (GQA/MQA) attention with the per-head max-logit record QK-Clip needs.

Both keep the call signature of ``MLAttention`` (``x, cos, sin, allowed, past``) and record S_max the same way: in
training forwards (grad enabled) a running per-head max of the scaled, unmasked logits, untouched by eval forwards,
computed by ``k2core.kernels.max_logit`` beside SDPA (no [T, T] logits).
Each class also says how QK-Clip rescales it (``qk_clip_rows``), so ``k2core.optim.apply_qk_clip`` never has to know
the layout:

* MHA (K2 §2.1, "straightforward"): W_q^h and W_k^h rows each by sqrt(gamma_h).
* GQA/MQA (no rule in the report): the whole gamma_h goes on the query rows of head h and the key shared by the
  group is left alone. That is the MLA rule for a shared key (k^R): exact per head, so head h's logits become
  gamma_h times their old value and sibling heads of the group are untouched (no over-clipping, unlike a group-max
  rule that scales the shared key).
"""

from __future__ import annotations

import torch
from torch import nn

from k2core.kernels import max_logit
from k2core.model.layers import RecordingAttention, apply_rope, record_max, smax_key_mask

KVCache = tuple[torch.Tensor, torch.Tensor]  # (rotated keys [B, H_kv, S, d], values [B, H_kv, S, d])


class GQAttention(RecordingAttention):
    """Grouped-query attention: ``num_heads`` query heads share ``num_kv_heads`` key/value heads (MQA when 1).

    Query head h reads key/value head ``h // (num_heads // num_kv_heads)``. RoPE rotates the whole head dimension,
    so ``cos``/``sin`` carry ``head_dim // 2`` frequencies, over interleaved pairs or (``interleaved_rope=False``)
    Llama's halves. ``qkv_bias`` / ``o_bias`` add biases (Qwen2: q, k, v); a q bias is scaled with its rows by
    QK-Clip, so scaling them still scales the logits exactly.
    """

    fp32_buffers = ("max_logit",)

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, qkv_bias: bool = False,
                 o_bias: bool = False, interleaved_rope: bool = True) -> None:
        super().__init__()
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.interleaved_rope = interleaved_rope
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=o_bias)
        self.register_buffer("max_logit", torch.full((num_heads,), float("-inf")), persistent=False)

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: KVCache | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, KVCache]:
        """Queries [B, H, T, d], keys and values expanded to [B, H, S, d], and the (unexpanded) updated cache.

        A forward that continues a cache (decoding) gets the groups' keys and values unexpanded, [B, H_kv, S, d]:
        ``attend`` reads them through SDPA's grouped-query path instead of copying the whole cache H / H_kv times
        per step (decoding records no S_max, which needs the expanded keys)."""
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin, self.interleaved_rope), apply_rope(k, cos, sin, self.interleaved_rope)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            return q, k, v, (k, v)
        expand = self.group_size
        return q, k.repeat_interleave(expand, dim=1), v.repeat_interleave(expand, dim=1), (k, v)

    def record_max_logit(self, q: torch.Tensor, k: torch.Tensor, keys: torch.Tensor | None) -> None:
        """Fold this forward's per-head S_max into ``max_logit``: q and k [B, H, T, d] are ``project``'s, ``keys``
        the key padding mask [B, T] or None."""
        key_mask = smax_key_mask(q, k, keys)
        if self.num_kv_heads == 1:  # MQA: the kernel packs one key shared by all heads instead of H copies
            k = k[:, :1]
        record_max(self.max_logit, max_logit(q, k, self.scale, key_mask))

    def _head_rows(self, per_head: torch.Tensor) -> torch.Tensor:
        """[H] per-head factors -> [H * head_dim] per-row factors of a head-major projection."""
        return per_head.repeat_interleave(self.head_dim)

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(weight, per-row factor) pairs that scale every logit of head h by gamma[h]: q rows (and q bias) by
        gamma_h, the shared keys untouched."""
        rows = self._head_rows(gamma)
        bias = self.q_proj.bias
        return [(self.q_proj.weight, rows)] + ([] if bias is None else [(bias, rows)])


class MHAttention(GQAttention):
    """Multi-head attention (one key/value head per query head); QK-Clip splits gamma_h evenly over W_q^h and W_k^h."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int) -> None:
        super().__init__(hidden_size, num_heads, num_heads, head_dim)

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """W_q^h and W_k^h rows each by sqrt(gamma_h) (K2 §2.1)."""
        root = self._head_rows(gamma.sqrt())
        return [(self.q_proj.weight, root), (self.k_proj.weight, root)]
