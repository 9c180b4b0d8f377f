"""HF-format checkpoint I/O: ``config.json`` + safetensors, with the per-expert tensor names transformers writes.

In memory the experts are fused 3-D tensors; on disk (as transformers v5 and the released K2 weights do) each
expert is ``mlp.experts.{e}.{gate_proj,up_proj,down_proj}.weight``. Loading accepts both layouts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from k2core.model.config import K2Config
from k2core.storage.fs import staging_dir, swap_in
from k2core.storage.manifest import verify_manifest, write_manifest

if TYPE_CHECKING:
    from k2core.model.llama import LlamaFamilyForCausalLM
    from k2core.model.modeling import K2ForCausalLM

Model = TypeVar("Model", bound=torch.nn.Module)
_FUSED = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
_PER_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def _to_disk_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _FUSED.match(name)
        if match is None:
            out[name] = tensor.contiguous()
            continue
        prefix, kind = match.groups()
        for e in range(tensor.shape[0]):
            if kind == "down_proj":
                out[f"{prefix}.{e}.down_proj.weight"] = tensor[e].contiguous()
            else:
                gate, up = tensor[e].chunk(2, dim=0)
                out[f"{prefix}.{e}.gate_proj.weight"] = gate.contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = up.contiguous()
    return out


def _to_memory_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        match = _PER_EXPERT.match(name)
        if match is None:
            out[name] = tensor
            continue
        prefix, e, kind = match.groups()
        experts.setdefault(prefix, {}).setdefault(int(e), {})[kind] = tensor
    for prefix, by_index in experts.items():
        ordered = [by_index[e] for e in sorted(by_index)]
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([x["gate_proj"], x["up_proj"]]) for x in ordered])
        out[f"{prefix}.down_proj"] = torch.stack([x["down_proj"] for x in ordered])
    return out


def save_checkpoint(model: K2ForCausalLM | LlamaFamilyForCausalLM, directory: Path) -> None:
    """Write config.json and model.safetensors (lm_head omitted when tied, as transformers does); any k2 model whose
    config has ``to_hf_dict`` and ``tie_word_embeddings``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    config = model.config.to_hf_dict()
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(_to_disk_layout(state), str(directory / "model.safetensors"), metadata={"format": "pt"})


def save_hf_folder(model: K2ForCausalLM | LlamaFamilyForCausalLM, tokenizer: Any, directory: Path, stage: str) -> None:
    """A stage's HF folder (weights, config, tokenizer files, sha256 manifest last), built in a staging folder and
    swapped in whole: `directory` is always one complete export, never a mix of two or a half-written one."""
    staging = staging_dir(directory)
    save_checkpoint(model, staging)
    tokenizer.save_pretrained(str(staging))
    write_manifest(staging, stage)
    swap_in(staging, directory)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / "model.safetensors"
    if single.exists():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if not index.exists():
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(str(directory / shard)))
    return state


def load_checkpoint(cls: type[Model], directory: Path, dtype: torch.dtype | None,
                    overrides: dict[str, object]) -> Model:
    """Build the model from `directory`; a k2 checkpoint's files are first checked against its sha256 manifest
    (CheckpointIntegrityError names a bad file), a folder without a manifest (e.g. from transformers) loads as is.
    The config is read by the class's ``config_class`` (K2Config when it names none)."""
    verify_manifest(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: is {directory} a checkpoint folder?")
    config_class = getattr(cls, "config_class", K2Config)
    config = config_class.from_hf_dict(json.loads(config_path.read_text()), **overrides)
    model = cls(config)
    state = _to_memory_layout(_read_weights(directory))
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    unexpected = [k for k in state if k.startswith(f"model.layers.{config.num_hidden_layers}.")]
    for k in unexpected:  # multi-token-prediction layers stored after the main stack; not part of this model
        state.pop(k)
    missing, extra = model.load_state_dict(state, strict=False)
    if missing or extra:
        raise ValueError(f"checkpoint {directory} does not match the config: missing {missing[:8]}, "
                         f"unexpected {extra[:8]}")
    if dtype is not None:
        model.to(dtype)
    return model
