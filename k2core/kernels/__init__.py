"""Custom kernels: the per-head max logit QK-Clip needs, in C++ (OpenMP) and CUDA, with a pure-torch fallback, and a
fused CPU attention forward that returns it in the same pass."""

from k2core.kernels.attention import attention_max_logit
from k2core.kernels.build import KernelBuildWarning
from k2core.kernels.max_logit import backend, max_logit, max_logit_mla
from k2core.kernels.reference import attention_max_logit_reference, max_logit_reference

__all__ = [
    "KernelBuildWarning",
    "attention_max_logit",
    "attention_max_logit_reference",
    "backend",
    "max_logit",
    "max_logit_mla",
    "max_logit_reference",
]
