"""Whether training computes under bf16 autocast: on GPUs, and on CPUs only where they multiply bf16 natively
(AVX512-BF16 or AMX); elsewhere bf16 is emulated, and its matmuls are tens of times slower than fp32 (measured in
docs/benchmarks.md). Weights, gradients and optimizer state stay fp32 either way."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch

Autocast = Literal["auto", "bf16", "off"]
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU feature flags the kernel reports, or None where there is no /proc/cpuinfo (not Linux)."""
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (from its flags, else as oneDNN reports)."""
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(setting: Autocast, device: torch.device | str | None = None) -> bool:
    """Resolve the ``autocast`` knob for `device` (default: CUDA when available, else CPU): "auto" turns bf16 on
    for CUDA and for CPUs with native bf16, "bf16" always, "off" never."""
    if setting != "auto":
        return setting == "bf16"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and cpu_has_bf16())
