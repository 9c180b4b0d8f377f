"""Analytic parameter counts (never instantiates the model) for sizing runs and ``k2 plan``."""

from __future__ import annotations

from k2core.model.config import K2Config


def _attention(c: K2Config) -> int:
    heads, hidden, bias = c.num_attention_heads, c.hidden_size, int(c.attention_bias)
    if c.q_lora_rank is None:
        q = hidden * heads * c.qk_head_dim
    else:
        q = hidden * c.q_lora_rank + bias * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * c.qk_head_dim
    kv_a = hidden * (c.kv_lora_rank + c.qk_rope_head_dim) + bias * (c.kv_lora_rank + c.qk_rope_head_dim)
    kv_b = c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim)
    o = heads * c.v_head_dim * hidden + bias * hidden
    return q + kv_a + c.kv_lora_rank + kv_b + o


def count_parameters(config: K2Config) -> dict[str, int]:
    """Trainable parameter counts: total, activated per token (top-k routed + shared experts), and components.

    Buffers (the routing bias) are not parameters and not counted. The input embedding is counted in both total
    and activated (as the K2 / DeepSeek-V3 reports do).
    """
    c = config
    moe_layers = c.num_hidden_layers - c.first_k_dense_replace
    expert = 3 * c.hidden_size * c.moe_intermediate_size
    parts = {
        "embedding": c.vocab_size * c.hidden_size,
        "lm_head": 0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size,
        "attention": c.num_hidden_layers * _attention(c),
        "norms": (2 * c.num_hidden_layers + 1) * c.hidden_size,
        "dense_mlp": c.first_k_dense_replace * 3 * c.hidden_size * c.intermediate_size,
        "router": moe_layers * c.n_routed_experts * c.hidden_size,
        "shared_experts": moe_layers * c.n_shared_experts * expert,
        "routed_experts": moe_layers * c.n_routed_experts * expert,
    }
    total = sum(parts.values())
    inactive = moe_layers * (c.n_routed_experts - c.num_experts_per_tok) * expert
    mtp = c.num_nextn_predict_layers * _mtp_module(c, expert)
    return {"total": total, "activated": total - inactive, "total_with_mtp": total + mtp, **parts, "mtp": mtp}


def _mtp_module(c: K2Config, expert: int) -> int:
    """One DeepSeek-V3 multi-token-prediction module: two input norms, the 2h->h projection, one MoE block and
    its output norm (embedding and head are shared with the main model)."""
    block = _attention(c) + 2 * c.hidden_size + (c.n_routed_experts + c.n_shared_experts) * expert
    block += c.n_routed_experts * c.hidden_size  # router
    return 3 * c.hidden_size + 2 * c.hidden_size * c.hidden_size + block


def _human(n: int) -> str:
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_plan(config: K2Config) -> str:
    """A plain-text table of the counts, for ``k2 plan``."""
    counts = count_parameters(config)
    totals = ("total", "activated", "total_with_mtp")
    rows = [(name, counts[name]) for name in counts if name not in totals]
    rows += [("total (main model)", counts["total"]), ("total with MTP modules", counts["total_with_mtp"]),
             ("activated / token", counts["activated"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'component':<{width}}  {'params':>18}  {'human':>9}", "-" * (width + 31)]
    lines += [f"{name:<{width}}  {n:>18,}  {_human(n):>9}" for name, n in rows]
    c = config
    lines.append(f"layers {c.num_hidden_layers} (dense {c.first_k_dense_replace}), hidden {c.hidden_size}, "
                 f"heads {c.num_attention_heads}, experts {c.n_routed_experts} top-{c.num_experts_per_tok} "
                 f"+ {c.n_shared_experts} shared, vocab {c.vocab_size}")
    return "\n".join(lines)
