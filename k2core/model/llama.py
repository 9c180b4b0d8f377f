"""Dense GQA causal LMs of the Llama family (Llama, Qwen2, Mistral) as k2 models, so MuonClip can post-train a base
model that was not pretrained by this pipeline.

Parameter names and shapes are those of transformers' ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
``MistralForCausalLM``, so an HF folder loads as is and ``save_pretrained`` writes a folder transformers loads.
Attention is ``GQAttention`` (S_max recorded in training forwards, QK-Clip on the query rows of each head) with
Llama's half-split RoPE; the forward, the KV cache and ``k2core.model.generate`` follow ``K2ForCausalLM``'s
interface, so trainers and samplers take either family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from k2core.model.attention_variants import GQAttention, KVCache
from k2core.model.layers import AttentionMask, RMSNorm, SwiGLU, causal_attention_mask, rope_cos_sin
from k2core.model.modeling import CausalLMOutput, K2ForCausalLM

ModelType = Literal["llama", "qwen2", "mistral"]
ARCHITECTURES: dict[str, str] = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                 "mistral": "MistralForCausalLM"}


class LlamaFamilyConfig(BaseModel):
    """The architecture fields of a transformers Llama / Qwen2 / Mistral ``config.json`` that change the math.

    Unknown keys are ignored when reading (they do not change the forward); a feature the model does not implement
    (RoPE scaling, MLP bias, an active sliding window, another activation) is refused rather than silently dropped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: ModelType
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    attention_bias: bool = False  # Llama: bias on q, k, v and o; Qwen2 always has q, k, v biases (and none on o)
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    sliding_window: int | None = None  # Mistral's window (Qwen2's only with use_sliding_window)
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @model_validator(mode="after")
    def _check_shapes(self) -> LlamaFamilyConfig:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (RoPE rotates pairs)")
        return self

    @property
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` content transformers' class for ``model_type`` loads."""
        data = self.model_dump(exclude={"rope_theta"})
        if self.model_type == "qwen2":
            data.pop("attention_bias")
            data.update(use_sliding_window=self.sliding_window is not None)
        data.update(architectures=[ARCHITECTURES[self.model_type]], hidden_act="silu", mlp_bias=False,
                    rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta}, attention_dropout=0.0,
                    use_cache=True)
        return data

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], **overrides: Any) -> LlamaFamilyConfig:
        """Read a transformers ``config.json`` (v4 ``rope_theta``/``rope_scaling`` or v5 ``rope_parameters``)."""
        if data.get("model_type") not in ARCHITECTURES:
            raise ValueError(f"expected model_type in {sorted(ARCHITECTURES)}, got {data.get('model_type')!r}")
        rope = dict(data.get("rope_parameters") or {})
        scaling = data.get("rope_scaling") or {}
        scaling_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope.get("rope_type", "default") != "default" or scaling_type != "default":
            raise ValueError("RoPE scaling is not implemented; use a model with default RoPE")
        if data.get("hidden_act", "silu") != "silu" or data.get("mlp_bias", False):
            raise ValueError("MLPs other than SwiGLU without bias (hidden_act silu, mlp_bias false) are not "
                             "implemented")
        if data.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("partial rotary embeddings are not implemented")
        fields = {k: v for k, v in data.items() if k in cls.model_fields}
        fields["rope_theta"] = rope.get("rope_theta", data.get("rope_theta", 10000.0))
        if fields.get("num_key_value_heads") is None:
            fields["num_key_value_heads"] = data["num_attention_heads"]
        if fields.get("head_dim") is None:
            fields["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
        if data["model_type"] == "qwen2" and not data.get("use_sliding_window", False):
            fields["sliding_window"] = None
        fields.update(overrides)
        return cls(**fields)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: GQA attention, then a dense SwiGLU MLP."""

    def __init__(self, config: LlamaFamilyConfig) -> None:
        super().__init__()
        self.self_attn = GQAttention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                                     config.head_dim, qkv_bias=config.qkv_bias, o_bias=config.o_bias,
                                     interleaved_rope=False)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask,
                past: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaFamilyModel(nn.Module):
    """Embedding, decoder stack and final norm (``model.*`` in the checkpoint)."""

    def __init__(self, config: LlamaFamilyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None, past_key_values: list[KVCache] | None,
                token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[KVCache]]:
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        window = self.config.sliding_window
        if window is not None and past_len + input_ids.shape[1] > window:
            raise ValueError(f"sequence of {past_len + input_ids.shape[1]} tokens exceeds the sliding window "
                             f"({window}), which this model does not implement")
        mask = causal_attention_mask(input_ids, past_len, attention_mask, token_mask)
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + input_ids.shape[1], device=input_ids.device)[None]
            position_ids = position_ids.expand(input_ids.shape[0], -1)
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        caches = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            caches.append(cache)
        return self.norm(x), caches


class LlamaFamilyForCausalLM(nn.Module):
    """Causal LM head on LlamaFamilyModel, with ``K2ForCausalLM``'s forward, save and load."""

    config_class = LlamaFamilyConfig

    def __init__(self, config: LlamaFamilyConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaFamilyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        """K2's init (normal(0, initializer_range) matrices, zero biases, unit norms); only read by tests and
        from-scratch runs, since a post-trained model loads its weights."""
        K2ForCausalLM._init_weights(self, module)  # type: ignore[arg-type]  # reads only config.initializer_range

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: list[KVCache] | None = None,
                use_cache: bool = False, labels: torch.Tensor | None = None, logits_to_keep: int = 0,
                token_mask: torch.Tensor | None = None) -> CausalLMOutput:
        """Logits [B, T, V] (the last ``logits_to_keep`` positions if > 0) and the mean shifted next-token CE over
        labels that are not -100, as ``K2ForCausalLM.forward``; ``token_mask`` is accepted for the same call
        signature (a dense model has no expert load to mask)."""
        hidden, caches = self.model(input_ids, attention_mask, position_ids, past_key_values, token_mask)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        past = caches if use_cache else None
        return CausalLMOutput(logits=logits, loss=loss, past_key_values=past)  # type: ignore[arg-type]

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` in transformers' layout for this ``model_type``."""
        from k2core.model.checkpoint import save_checkpoint

        save_checkpoint(self, Path(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None, **overrides: object
                        ) -> LlamaFamilyForCausalLM:
        """Load an HF folder (safetensors, one file or sharded) of a Llama / Qwen2 / Mistral causal LM."""
        from k2core.model.checkpoint import load_checkpoint

        return load_checkpoint(cls, Path(directory), dtype, overrides)


__all__ = ["ARCHITECTURES", "LlamaFamilyConfig", "LlamaFamilyForCausalLM"]
