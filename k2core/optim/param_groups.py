"""Which parameters Muon trains and which fall back to AdamW, decided in one place.

Hidden matrices (attention projections, dense MLP, router gate) and 3-D expert stacks get Muon;
token embeddings, the output head, norms, biases and other 1-D parameters get AdamW with the
same lr and weight decay (Moonlight's split, kept by K2). Frozen parameters (the router's
score-correction bias, updated by a rule rather than by gradients) are left out.

The routed experts' `gate_up_proj` [E, 2I, H] is transformers v5's fusion of two matrices that
DeepSeek-V3, Moonlight and K2 train as separate weights (w1 = gate, w3 = up, each I x H). It gets
its own Muon group with `row_blocks=2`, so gate and up are orthogonalised and lr-scaled separately,
as they would be unfused. MLA's kv_b_proj / q_b_proj / kv_a_proj_with_mqa stay whole: they are
single weights in the reference models too.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

ADAMW_NAME_PARTS = ("embed_tokens", "lm_head")
FUSED_ROW_BLOCKS = {"experts.gate_up_proj": 2}


def uses_muon(name: str, param: Tensor) -> bool:
    """True for hidden 2-D matrices and 3-D expert stacks; embeddings, head and vectors use AdamW."""
    if any(part in name for part in ADAMW_NAME_PARTS):
        return False
    return param.ndim in (2, 3)


def muon_row_blocks(name: str) -> int:
    """How many separately trained matrices a Muon parameter stacks along its rows (1 unless fused)."""
    return next((blocks for suffix, blocks in FUSED_ROW_BLOCKS.items() if name.endswith(suffix)), 1)


def muon_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Muon groups (`use_muon=True`, one per `row_blocks` value) and one AdamW group, names kept for inspection."""
    groups: dict[int | None, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        blocks = muon_row_blocks(name) if uses_muon(name, param) else None
        if blocks not in groups:
            groups[blocks] = {"params": [], "param_names": [], "use_muon": blocks is not None, "lr": lr,
                              "weight_decay": weight_decay}
            if blocks is not None:
                groups[blocks]["row_blocks"] = blocks
        groups[blocks]["params"].append(param)
        groups[blocks]["param_names"].append(name)
    return sorted(groups.values(), key=lambda g: (not g["use_muon"], g.get("row_blocks", 0)))
