"""Multi-head Latent Attention (MLA) with the per-head max-logit record QK-Clip needs.

Per head h the query is [q^C_h | q^R_h] and the key [k^C_h | k^R] where k^R (the rotary key) is shared by all heads;
keys and values are expanded from one compressed latent that is also what the KV cache stores. Attention runs
through SDPA and S_max through ``k2core.kernels.max_logit_mla``, so no [T, T] logits are materialised.
"""

from __future__ import annotations

import torch
from torch import nn

from k2core.kernels import max_logit_mla
from k2core.model.config import K2Config
from k2core.model.layers import RecordingAttention, RMSNorm, apply_rope, record_max, smax_key_mask

LatentCache = tuple[torch.Tensor, torch.Tensor]  # (normed kv latent [B, S, r], rotated shared key [B, 1, S, d_R])


class MLAttention(RecordingAttention):
    """MLA; in training forwards (grad enabled) it keeps a running per-head max of the scaled, unmasked logits.

    It is a ``k2core.optim.qk_clip.ClipsQK`` (``max_logit`` + ``qk_clip_rows``), so QK-Clip needs no adapter.
    """

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

    def query_weight(self) -> nn.Parameter:
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

    def record_max_logit(self, q: torch.Tensor, k: torch.Tensor, keys: torch.Tensor | None) -> None:
        """Fold this forward's per-head S_max (max over the batch of the scaled logits of allowed pairs) into
        ``max_logit``; q and k are ``project``'s, ``keys`` the key padding mask [B, T] or None."""
        key_mask = smax_key_mask(q, k, keys)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        k_nope, k_rope = k.split([self.nope_dim, self.rope_dim], dim=-1)
        record_max(self.max_logit, max_logit_mla(q_nope, q_rope, k_nope, k_rope[:, :1], self.scale, key_mask))

    def qk_clip_rows(self, gamma: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """QK-Clip's MLA rule (K2 §2.1), as (weight, per-row factor) pairs: q^C rows and the k^C rows of kv_b_proj by
        sqrt(gamma_h), q^R rows by gamma_h; the shared k^R, the value rows and o_proj untouched. Every logit of head
        h is then gamma_h times its old value."""
        root = gamma.sqrt()[:, None]
        q_scale = torch.cat([root.expand(-1, self.nope_dim), gamma[:, None].expand(-1, self.rope_dim)], dim=1)
        kv_scale = torch.cat([root.expand(-1, self.nope_dim), torch.ones_like(root).expand(-1, self.v_dim)], dim=1)
        return [(self.query_weight(), q_scale.flatten()), (self.kv_b_proj.weight, kv_scale.flatten())]
