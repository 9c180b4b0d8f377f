"""Small building blocks shared by attention and MoE: RMSNorm, interleaved RoPE, SDPA with the model's masks, SwiGLU
MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (as DeepSeek-V3) so bf16 training keeps a stable normaliser."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [batch, seq, rope_dim // 2] for integer positions [batch, seq]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, device=positions.device, dtype=torch.float) / rope_dim))
    angles = positions[..., None].float() * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = True) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1), (x2, x3), ... of x [batch, heads, seq, d].

    The output lists the rotated even coordinates, then the rotated odd ones (DeepSeek-V3's layout); queries and keys
    share the permutation, so their dot products equal those of the interleaved rotation. With ``interleaved=False``
    the pairs are (x_i, x_{i + d/2}) and the output keeps the input layout (Llama's "rotate half").
    """
    cos, sin = cos[:, None], sin[:, None]
    even, odd = (x[..., 0::2], x[..., 1::2]) if interleaved else x.chunk(2, dim=-1)
    return torch.cat([even * cos - odd * sin, odd * cos + even * sin], dim=-1)


def key_padding(allowed: torch.Tensor) -> torch.Tensor | None:
    """The key mask [B or 1, S] (True = real token) behind an attention mask ``allowed`` [B or 1, 1, T, S] = causal
    and not padding, or None when no key is padded, and None for a forward that continues a KV cache (T < S), which
    uses neither (decoding reads ``allowed`` whole, without a device sync here).

    The last query row of a causal mask sees every key, so that row is the key mask. This lets S_max (through
    ``k2core.kernels``) and SDPA's causal path work from the mask the model builds without reading its [T, S] body.
    """
    if allowed.shape[-2] != allowed.shape[-1]:
        return None
    keys = allowed[:, 0, -1]
    return None if bool(keys.all()) else keys


@dataclass(frozen=True)
class AttentionMask:
    """What one forward may attend: ``allowed`` [B or 1, 1, T, S] and its key padding (``key_padding``). The model
    builds it once per forward, so its layers do not each read the padding back from the device."""

    allowed: torch.Tensor
    keys: torch.Tensor | None
    tokens: torch.Tensor | None = None  # [B, T] real (not padding) query tokens, for the MoE load; None: all

    @classmethod
    def of(cls, allowed: torch.Tensor | AttentionMask) -> AttentionMask:
        """``allowed`` as an AttentionMask (its key padding read off it), or the mask itself."""
        return allowed if isinstance(allowed, AttentionMask) else cls(allowed, key_padding(allowed))


def causal_attention_mask(input_ids: torch.Tensor, past_len: int, attention_mask: torch.Tensor | None,
                          token_mask: torch.Tensor | None) -> AttentionMask:
    """The AttentionMask of a forward over ``input_ids`` [B, T] after ``past_len`` cached positions: causal, minus
    padded keys of ``attention_mask`` [B, past + T]; ``token_mask`` (default: the query part of ``attention_mask``)
    marks real query tokens. Without an attention mask nothing is padded, so the padding is never read back."""
    batch, seq = input_ids.shape
    total = past_len + seq
    device = input_ids.device
    query_pos = torch.arange(past_len, total, device=device)
    allowed = (torch.arange(total, device=device)[None, :] <= query_pos[:, None])[None, None]
    if attention_mask is not None:
        if attention_mask.shape != (batch, total):
            raise ValueError(f"attention_mask must be [batch, past + seq] = {(batch, total)}, "
                             f"got {tuple(attention_mask.shape)}")
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    mask = AttentionMask(allowed, None) if attention_mask is None else AttentionMask.of(allowed)
    if token_mask is None and attention_mask is not None:
        token_mask = attention_mask[:, past_len:]
    return mask if token_mask is None else AttentionMask(mask.allowed, mask.keys, token_mask.bool())


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, keys: torch.Tensor | None,
           scale: float) -> torch.Tensor:
    """softmax(scale * q k^T) v over the allowed pairs through SDPA; ``keys`` is ``key_padding(allowed)``.

    SDPA's fused (flash) kernels need one head width for q, k and v, so with MLA's narrower values v is zero-padded
    and the output cut back (zero columns change nothing); otherwise SDPA would fall back to its math path, which
    materialises the [T, T] logits. Without padding or a cache SDPA applies causality itself (no mask tensor);
    otherwise the mask is an additive bias of the dtype's minimum rather than a boolean mask, so a query that may see
    no key (left padding) gets a finite, ignored output instead of NaN. Keys and values with fewer heads than the
    queries (a GQA cache) go through SDPA's ``enable_gqa``.
    """
    width = v.shape[-1]
    if width < q.shape[-1]:
        v = F.pad(v, (0, q.shape[-1] - width))
    gqa = k.shape[1] != q.shape[1]  # fewer key/value heads than query heads: SDPA reads the groups
    if keys is None and q.shape[2] == k.shape[2]:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        bias.masked_fill_(~allowed, torch.finfo(q.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=gqa)
    return out[..., :width]


def smax_key_mask(q: torch.Tensor, k: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor | None:
    """``keys`` as the [B, T] key mask the max-logit kernels take, after checking that the forward covers whole
    sequences (the kernels count pairs j <= i of one length T, which a forward continuing a KV cache is not)."""
    if q.shape[2] != k.shape[2]:
        raise ValueError("S_max is recorded over whole sequences: a training forward (grad enabled) cannot continue "
                         "a KV cache; run cached decoding under torch.no_grad() or in eval mode")
    return None if keys is None else keys.expand(q.shape[0], -1)


def record_max(record: torch.Tensor, s_max: torch.Tensor) -> None:
    """Fold one forward's per-head S_max into a running record [H] (fp32); the max is idempotent, so an activation
    recomputation of the same forward leaves the record unchanged."""
    with torch.no_grad():
        record.copy_(torch.maximum(record, s_max.to(record.device, torch.float32)))


class SwiGLU(nn.Module):
    """Dense feed-forward ``down(silu(gate(x)) * up(x))``, used by dense layers and shared experts."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class KeepsFp32Buffers(nn.Module):
    """A module whose named buffers stay fp32 under ``.to(dtype)`` / ``.bfloat16()`` (they only follow the device):
    the routing bias accumulates 1e-3 steps and the max-logit record feeds QK-Clip's gamma, both too fine for bf16."""

    fp32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        kept = {name: self._buffers[name] for name in self.fp32_buffers}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            self._buffers[name] = old.to(device=self._buffers[name].device, dtype=torch.float32)
        return self


class RecordingAttention(KeepsFp32Buffers):
    """The forward every attention layout shares: project (``project(x, cos, sin, past) -> q, k, v, cache``), record
    S_max in training forwards (``record_max_logit``), attend through SDPA, project out (``o_proj``). Layouts differ
    only in those pieces (MLA, MHA/GQA/MQA)."""

    scale: float
    o_proj: nn.Linear

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor | AttentionMask,
                past: Any = None) -> tuple[torch.Tensor, Any]:
        """``allowed`` [B or 1, 1, T, S] is True where query t may attend key s (causal and not padding); the model
        passes it as an ``AttentionMask`` with its key padding already read."""
        batch, seq, _ = x.shape
        q, k, v, cache = self.project(x, cos, sin, past)
        mask = AttentionMask.of(allowed)
        if self.training and torch.is_grad_enabled():
            self.record_max_logit(q, k, mask.keys)
        out = attend(q, k, v, mask.allowed, mask.keys, self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1)), cache

