"""Multi-head Latent Attention (MLA) with the per-head max-logit record QK-Clip needs.

Per head h the query is [q^C_h | q^R_h] and the key [k^C_h | k^R] where k^R (the rotary key) is shared by all heads;
keys and values are expanded from one compressed latent that is also what the KV cache stores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from k2core.model.config import K2Config
from k2core.model.layers import KeepsFp32Buffers, RMSNorm, apply_rope

LatentCache = tuple[torch.Tensor, torch.Tensor]  # (normed kv latent [B, S, r], rotated shared key [B, 1, S, d_R])


class MLAttention(KeepsFp32Buffers):
    """MLA; in training forwards (grad enabled) it keeps a running per-head max of the scaled, unmasked logits."""

    fp32_buffers = ("max_logit",)

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.nope_dim = config.qk_nope_head_dim
        self.rope_dim = config.qk_rope_head_dim
        self.v_dim = config.v_head_dim
        self.kv_rank = config.kv_lora_rank
        self.q_lora_rank = config.q_lora_rank
        self.scale = config.qk_head_dim ** -0.5
        hidden, heads, bias = config.hidden_size, config.num_attention_heads, config.attention_bias
        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, heads * config.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, config.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = nn.Linear(config.q_lora_rank, heads * config.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, config.kv_lora_rank + config.qk_rope_head_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(config.kv_lora_rank, heads * (config.qk_nope_head_dim + config.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(heads * config.v_head_dim, hidden, bias=bias)
        self.register_buffer("max_logit", torch.full((heads,), float("-inf")), persistent=False)

    def query_weight(self) -> torch.Tensor:
        """The matrix whose rows are the per-head [q^C | q^R] outputs (q_b_proj, or q_proj without a q LoRA)."""
        return (self.q_proj if self.q_lora_rank is None else self.q_b_proj).weight

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: LatentCache | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, LatentCache]:
        """Queries, keys [B, H, *, d_C + d_R], values [B, H, S, d_v] and the updated latent cache."""
        batch, seq, _ = x.shape
        q = self.q_proj(x) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, seq, self.num_heads, -1).transpose(1, 2)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)
        q_rope = apply_rope(q_rope, cos, sin)
        k_rope = apply_rope(k_rope[:, None], cos, sin)
        if past is not None:
            latent = torch.cat([past[0], latent], dim=1)
            k_rope = torch.cat([past[1], k_rope], dim=2)
        total = latent.shape[1]
        kv = self.kv_b_proj(latent).view(batch, total, self.num_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        k = torch.cat([k_nope, k_rope.expand(-1, self.num_heads, -1, -1)], dim=-1)
        return q, k, v, (latent, k_rope)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                past: LatentCache | None = None) -> tuple[torch.Tensor, LatentCache]:
        """``allowed`` [B or 1, 1, T, S] is True where query t may attend key s (causal and not padding)."""
        batch, seq, _ = x.shape
        q, k, v, cache = self.project(x, cos, sin, past)
        if self.training and torch.is_grad_enabled():
            logits = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            with torch.no_grad():
                head_max = logits.masked_fill(~allowed, float("-inf")).amax(dim=(0, 2, 3))
                self.max_logit.copy_(torch.maximum(self.max_logit, head_max.float()))
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
            probs = F.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(probs, v)
        else:
            bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
            bias.masked_fill_(~allowed, torch.finfo(q.dtype).min)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.v_dim)
        return self.o_proj(out), cache
