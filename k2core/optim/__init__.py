"""MuonClip: the Muon optimizer (with AdamW fallback), parameter routing, WSD schedule, QK-Clip."""

from k2core.optim.muon import Muon, newton_schulz
from k2core.optim.param_groups import muon_param_groups, uses_muon
from k2core.optim.qk_clip import ClipsQK, apply_qk_clip, clip_layers, step_max_logits
from k2core.optim.schedule import wsd_from_fractions, wsd_lambda

__all__ = [
    "ClipsQK",
    "Muon",
    "apply_qk_clip",
    "clip_layers",
    "muon_param_groups",
    "newton_schulz",
    "step_max_logits",
    "uses_muon",
    "wsd_from_fractions",
    "wsd_lambda",
]
