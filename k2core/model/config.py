"""K2 model configuration.

Field names are those of transformers' ``DeepseekV3Config`` so a config round-trips through ``config.json``; the
only extra field is the training-time router bias speed used by aux-loss-free load balancing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Keys transformers writes that our architecture does not need (or fixes to one value, checked in ``from_hf_dict``).
_HF_ONLY_KEYS = {"rope_parameters", "rope_interleave", "architectures", "model_type"}

_PRESETS: dict[str, dict[str, Any]] = {
    # CPU smoke size: ~1.6M parameters, runs a training step in well under a second on one core.
    "tiny": dict(
        vocab_size=2048, hidden_size=128, intermediate_size=384, moe_intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
        routed_scaling_factor=2.827, kv_lora_rank=64, q_lora_rank=64, qk_rope_head_dim=16, v_head_dim=32,
        qk_nope_head_dim=32, n_group=1, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1,
        norm_topk_prob=True, max_position_embeddings=1024, initializer_range=0.02, rms_norm_eps=1e-6,
        rope_theta=50000.0, router_bias_update_speed=0.001, bos_token_id=None, eos_token_id=None,
        num_nextn_predict_layers=0,
    ),
    # One-GPU size: ~1.0B total / ~0.25B activated parameters, same shape ratios as K2.
    "small": dict(
        vocab_size=32768, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
        num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=16, n_shared_experts=1,
        n_routed_experts=48, routed_scaling_factor=2.827, kv_lora_rank=256, q_lora_rank=512, qk_rope_head_dim=32,
        v_head_dim=64, qk_nope_head_dim=64, n_group=1, topk_group=1, num_experts_per_tok=4,
        first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=4096, initializer_range=0.02,
        rms_norm_eps=1e-6, rope_theta=50000.0, router_bias_update_speed=0.001, bos_token_id=None,
        eos_token_id=None, num_nextn_predict_layers=0,
    ),
    # Published Kimi K2 architecture at its 4k pretraining context (YaRN extension not included).
    "kimi-k2": dict(
        vocab_size=163840, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, num_attention_heads=64, num_key_value_heads=64, n_shared_experts=1,
        n_routed_experts=384, routed_scaling_factor=2.827, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64,
        v_head_dim=128, qk_nope_head_dim=128, n_group=1, topk_group=1, num_experts_per_tok=8,
        first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=4096, initializer_range=0.02,
        rms_norm_eps=1e-6, rope_theta=50000.0, bos_token_id=163584, eos_token_id=163585,
        router_bias_update_speed=0.001, num_nextn_predict_layers=1,
    ),
}


class K2Config(BaseModel):
    """Architecture of a DeepSeek-V3-layout model (MLA + fine-grained MoE), plus K2 training knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Defaults are those of transformers' DeepseekV3Config (checked by a test), so a config.json written for
    # transformers loads as it is; the presets name every architecture field.
    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    num_key_value_heads: int = 128
    n_shared_experts: int = 1
    n_routed_experts: int = 256
    routed_scaling_factor: float = 2.5
    kv_lora_rank: int = 512
    q_lora_rank: int | None = 1536
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    qk_nope_head_dim: int = 128
    n_group: int = 8
    topk_group: int = 4
    num_experts_per_tok: int = 8
    first_k_dense_replace: int = 3
    norm_topk_prob: bool = True
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Architecture constants of K2 (and DeepSeek-V3); kept as fields so config.json round-trips.
    hidden_act: Literal["silu"] = "silu"
    rope_scaling: None = None
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    pad_token_id: int | None = None
    # Multi-token-prediction modules that checkpoints may ship after the main layers. Like transformers'
    # DeepseekV3ForCausalLM, the model does not build them; `k2 plan` counts them.
    num_nextn_predict_layers: int = Field(default=1, ge=0)
    # Aux-loss-free balancing: bias step per optimizer step (DeepSeek-V3's 0.001; K2 does not publish one). Not a
    # transformers field.
    router_bias_update_speed: float = 0.001

    @model_validator(mode="after")
    def _check_shapes(self) -> K2Config:
        if self.num_key_value_heads != self.num_attention_heads:
            raise ValueError("MLA expands one latent into every head: set num_key_value_heads = num_attention_heads")
        if self.n_routed_experts % self.n_group:
            raise ValueError("n_routed_experts must be divisible by n_group")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError("topk_group must be in [1, n_group]")
        if self.n_routed_experts // self.n_group < 2:
            raise ValueError("group scores sum the top-2 experts of a group: use at least 2 experts per group")
        if self.num_experts_per_tok > self.topk_group * (self.n_routed_experts // self.n_group):
            raise ValueError("num_experts_per_tok exceeds the experts reachable in topk_group groups")
        if self.qk_rope_head_dim % 2:
            raise ValueError("qk_rope_head_dim must be even (RoPE rotates pairs)")
        if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
            raise ValueError("first_k_dense_replace must be in [0, num_hidden_layers]")
        return self

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> K2Config:
        """A named architecture (``tiny``, ``small``, ``kimi-k2``), optionally with some fields replaced."""
        if name not in _PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` content transformers' ``DeepseekV3ForCausalLM`` needs to load our checkpoint."""
        data = self.model_dump(exclude={"rope_theta", "rope_scaling"})
        data.update(
            architectures=["DeepseekV3ForCausalLM"],
            model_type="deepseek_v3",
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            rope_interleave=True,
            attention_dropout=0.0,
            use_cache=True,
            dtype="float32",
        )
        return data

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], **overrides: Any) -> K2Config:
        """Read a transformers ``config.json``: fields it lacks take DeepseekV3Config's defaults (as transformers
        would read it), ``overrides`` replace any field (our training knobs)."""
        if data.get("model_type") not in (None, "deepseek_v3"):
            raise ValueError(f"expected model_type 'deepseek_v3', got {data.get('model_type')!r}")
        if data.get("rope_interleave", True) is not True:
            raise ValueError("only interleaved RoPE (rope_interleave: true, the DeepSeek-V3 layout) is implemented")
        rope = data.get("rope_parameters") or {}
        legacy_scaling = data.get("rope_scaling")
        if rope.get("rope_type", "default") != "default" or legacy_scaling:
            raise ValueError("RoPE scaling (YaRN) is not implemented; use a checkpoint with default RoPE")
        fields = {k: v for k, v in data.items() if k in cls.model_fields and k not in _HF_ONLY_KEYS}
        fields.pop("rope_scaling", None)
        if "rope_theta" in rope:
            fields["rope_theta"] = rope["rope_theta"]
        if fields.get("num_key_value_heads") is None:
            fields["num_key_value_heads"] = fields.get("num_attention_heads")
        fields.update(overrides)
        return cls(**fields)
