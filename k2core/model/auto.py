"""One entry point for "any local HF folder" as a starting model: the k2 class is picked from config.json's
``model_type`` (deepseek_v3 / k2 -> K2ForCausalLM; llama, qwen2, mistral -> LlamaFamilyForCausalLM)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from k2core.model.llama import ARCHITECTURES, LlamaFamilyForCausalLM
from k2core.model.modeling import K2ForCausalLM

CausalLM = K2ForCausalLM | LlamaFamilyForCausalLM
MODEL_CLASSES: dict[str, type[K2ForCausalLM] | type[LlamaFamilyForCausalLM]] = {
    "deepseek_v3": K2ForCausalLM, "k2": K2ForCausalLM, **{name: LlamaFamilyForCausalLM for name in ARCHITECTURES}}


def model_class(directory: str | Path) -> type[K2ForCausalLM] | type[LlamaFamilyForCausalLM]:
    """The k2 class for the folder's ``config.json`` (a published ``s3://`` checkpoint is a K2 one)."""
    if "://" in str(directory):
        return K2ForCausalLM
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} a model folder?")
    model_type = json.loads(path.read_text()).get("model_type", "deepseek_v3")
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"{directory}: model_type {model_type!r} is not supported; k2 trains "
                         f"{sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[model_type]


def load_causal_lm(directory: str | Path, dtype: torch.dtype | None = None, **overrides: object) -> CausalLM:
    """Load a k2 checkpoint or a transformers Llama / Qwen2 / Mistral folder as the k2 model that trains it.

    ``overrides`` reach the config (K2's training knobs such as ``router_bias_update_speed``); a dense model takes
    only fields of its own config."""
    return model_class(directory).from_pretrained(directory, dtype=dtype, **overrides)
