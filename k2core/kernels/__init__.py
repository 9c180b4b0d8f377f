"""Custom kernels: the per-head max logit QK-Clip needs, in C++ (OpenMP) and CUDA, with a pure-torch fallback."""

from k2core.kernels.build import KernelBuildWarning
from k2core.kernels.max_logit import backend, max_logit, max_logit_mla
from k2core.kernels.reference import max_logit_reference

__all__ = ["KernelBuildWarning", "backend", "max_logit", "max_logit_mla", "max_logit_reference"]
