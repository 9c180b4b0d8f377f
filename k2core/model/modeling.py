"""K2ForCausalLM: the DeepSeek-V3 decoder (MLA + MoE), with parameter names and shapes of transformers'
``DeepseekV3ForCausalLM`` so checkpoints load in either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from k2core.model.attention import LatentCache, MLAttention
from k2core.model.config import K2Config
from k2core.model.layers import AttentionMask, RMSNorm, SwiGLU, causal_attention_mask, rope_cos_sin
from k2core.model.moe import Experts, MoE, TopKRouter


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None
    past_key_values: list[LatentCache] | None


class DecoderLayer(nn.Module):
    """Pre-norm block: attention then a dense SwiGLU (first ``first_k_dense_replace`` layers) or an MoE."""

    def __init__(self, config: K2Config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = MLAttention(config)
        self.mlp: nn.Module = (SwiGLU(config.hidden_size, config.intermediate_size)
                               if layer_idx < config.first_k_dense_replace else MoE(config))
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask,
                past: LatentCache | None) -> tuple[torch.Tensor, LatentCache]:
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + attn
        h = self.post_attention_layernorm(x)
        return x + (self.mlp(h, mask.tokens) if isinstance(self.mlp, MoE) else self.mlp(h)), cache


class K2Model(nn.Module):
    """Embedding, decoder stack and final norm (``model.*`` in the checkpoint)."""

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None, past_key_values: list[LatentCache] | None,
                token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[LatentCache]]:
        batch, seq = input_ids.shape
        past_len = past_key_values[0][0].shape[1] if past_key_values else 0
        query_pos = torch.arange(past_len, past_len + seq, device=input_ids.device)
        mask = causal_attention_mask(input_ids, past_len, attention_mask, token_mask)
        if position_ids is None:
            position_ids = query_pos[None].expand(batch, -1)
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.config.qk_rope_head_dim, self.config.rope_theta, x.dtype)
        caches = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            caches.append(cache)
        return self.norm(x), caches


class K2ForCausalLM(nn.Module):
    """Causal LM head on K2Model; ``forward`` mirrors the transformers call signature used by our loops."""

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.config = config
        self.model = K2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for every matrix, ones for norms, zeros for biases (DeepSeek-V3's init)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding, TopKRouter)):
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, Experts):
            module.gate_up_proj.normal_(0.0, std)
            module.down_proj.normal_(0.0, std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: list[LatentCache] | None = None,
                use_cache: bool = False, labels: torch.Tensor | None = None, logits_to_keep: int = 0,
                token_mask: torch.Tensor | None = None) -> CausalLMOutput:
        """Logits [B, T, V] (the last ``logits_to_keep`` positions if > 0); loss is the mean next-token CE over
        positions whose (unshifted) label is not -100; labels are shifted here as in transformers.

        ``token_mask`` [B, T] marks real tokens where padding needs no attention mask (right padding under causal
        attention, as in SFT): padding then does not count in the MoE balancing load. With ``attention_mask`` it
        defaults to that mask."""
        hidden, caches = self.model(input_ids, attention_mask, position_ids, past_key_values, token_mask)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            # next-token targets aligned with every position (the last one ignored) rather than a sliced copy of
            # the logits: the copy and its zero-filled gradient cost as much as the softmax at a small width
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss, past_key_values=caches if use_cache else None)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` readable by transformers' ``DeepseekV3ForCausalLM``."""
        from k2core.model.checkpoint import save_checkpoint

        save_checkpoint(self, Path(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None, **overrides: object
                        ) -> K2ForCausalLM:
        """Load a folder written by us or by transformers (per-expert or fused expert tensors), or a checkpoint
        published to a storage root (`s3://bucket/prefix/checkpoints/sft`), read through its published.json."""
        from k2core.model.checkpoint import load_checkpoint

        if "://" in str(directory):
            from k2core.storage.publish import fetched

            with fetched(str(directory)) as local:
                return load_checkpoint(cls, local, dtype, overrides)
        return load_checkpoint(cls, Path(directory), dtype, overrides)


def _attention_modules(model: nn.Module) -> list[MLAttention]:
    return [m for m in model.modules() if isinstance(m, MLAttention)]


def max_logits(model: nn.Module) -> torch.Tensor:
    """Running per-head max pre-softmax logit since the last reset, [layers, heads] (-inf where nothing was seen)."""
    heads = _attention_modules(model)
    if not heads:
        raise ValueError("model has no MLAttention layers; pass a K2ForCausalLM (or a wrapper around one)")
    return torch.stack([m.max_logit for m in heads])


def reset_max_logits(model: nn.Module) -> None:
    """Forget the recorded maxima; the trainer calls this once per optimizer step (apply_qk_clip does it too)."""
    for m in _attention_modules(model):
        m.max_logit.fill_(float("-inf"))


@torch.no_grad()
def update_router_bias(model: nn.Module, speed: float | None = None) -> dict[str, float]:
    """Aux-loss-free balancing step: ``bias += speed * sign(mean_load - load)`` per MoE layer, then reset counts.

    Counts are summed over data-parallel ranks when torch.distributed is initialised, so every rank applies the same
    update. ``speed`` defaults to the config's ``router_bias_update_speed``. Returns the worst relative overload
    ``max_load / mean_load - 1`` over layers (before the update) and the number of layers updated.
    """
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    if speed is None:
        configs = [m.config for m in model.modules() if isinstance(m, K2ForCausalLM)]
        if not configs:
            raise ValueError("pass speed= when the model is not a K2ForCausalLM")
        speed = configs[0].router_bias_update_speed
    worst = 0.0
    updated = 0
    for router in routers:
        load = router.expert_load.float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(load)
        if load.sum() > 0:
            mean = load.mean()
            worst = max(worst, float(load.max() / mean - 1.0))
            router.e_score_correction_bias += speed * torch.sign(mean - load)
            updated += 1
        router.expert_load.zero_()
    return {"max_overload": worst, "layers_updated": float(updated)}
