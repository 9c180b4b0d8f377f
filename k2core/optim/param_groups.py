"""Which parameters Muon trains and which fall back to AdamW, decided in one place.

Hidden matrices (attention projections, dense MLP, router gate) and 3-D expert stacks get Muon;
token embeddings, the output head, norms, biases and other 1-D parameters get AdamW with the
same lr and weight decay (Moonlight's split, kept by K2). Frozen parameters (the router's
score-correction bias, updated by a rule rather than by gradients) are left out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

ADAMW_NAME_PARTS = ("embed_tokens", "lm_head")


def uses_muon(name: str, param: Tensor) -> bool:
    """True for hidden 2-D matrices and 3-D expert stacks; embeddings, head and vectors use AdamW."""
    if any(part in name for part in ADAMW_NAME_PARTS):
        return False
    return param.ndim in (2, 3)


def muon_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups for `Muon`: `use_muon=True` and `use_muon=False`, with names kept for inspection."""
    muon_names: list[str] = []
    muon_params: list[Tensor] = []
    adam_names: list[str] = []
    adam_params: list[Tensor] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if uses_muon(name, param):
            muon_names.append(name)
            muon_params.append(param)
        else:
            adam_names.append(name)
            adam_params.append(param)
    groups = [
        {"params": muon_params, "param_names": muon_names, "use_muon": True, "lr": lr, "weight_decay": weight_decay},
        {"params": adam_params, "param_names": adam_names, "use_muon": False, "lr": lr, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]
