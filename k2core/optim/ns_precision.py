"""Which precision Muon's Newton-Schulz runs in: bf16 where the hardware multiplies bf16 fast, else fp32.

Whether bf16 is fast on a CPU is measured, not assumed: a CPU with native bf16 matmul units (AVX512-BF16, AMX)
runs bf16 GEMMs faster than fp32, one without them (e.g. AVX2-only) falls back to kernels ~10x slower than fp32
(measured on a 2-core AMD EPYC with AVX2 only: 6-7 vs 60-100 GFLOP/s). `bf16_matmul_is_fast` times one matmul in each
dtype once per process and device type and caches the answer.
"""

from __future__ import annotations

import functools
import time
from typing import Literal

import torch

NsDtypeChoice = Literal["auto", "bf16", "fp32"]
NAMED_NS_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}
# bf16 must beat fp32 clearly: choosing it also gives up the Gram iteration (fp32 only), which saves ~27% of the
# FLOPs on K2's rectangular matrices; 1.5x covers that with margin.
BF16_MIN_SPEEDUP = 1.5
_PROBE_SIZE = 256
_PROBE_REPEATS = 3


def _best_matmul_seconds(dtype: torch.dtype, device: torch.device) -> float:
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE, device=device).to(dtype)
    b = torch.randn(_PROBE_SIZE, _PROBE_SIZE, device=device).to(dtype)
    a @ b  # warm-up: kernel selection and thread-pool start
    best = float("inf")
    for _ in range(_PROBE_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def bf16_matmul_is_fast(device_type: str) -> bool:
    """Whether bf16 matmuls run at least BF16_MIN_SPEEDUP x faster than fp32 on this kind of device.

    CPU: measured once (a 256^3 matmul in each dtype, best of 3; ~30 ms where bf16 is slow). CUDA: bf16 tensor-core
    support as torch reports it. Other accelerators: assumed, as the reference implementations run bf16 there.
    """
    if device_type == "cpu":
        device = torch.device("cpu")
        fp32 = _best_matmul_seconds(torch.float32, device)
        bf16 = _best_matmul_seconds(torch.bfloat16, device)
        return bf16 * BF16_MIN_SPEEDUP <= fp32
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def default_ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 where bf16 matmuls are fast on `device` (`bf16_matmul_is_fast`), else fp32."""
    return torch.bfloat16 if bf16_matmul_is_fast(device.type) else torch.float32


def check_ns_dtype(choice: torch.dtype | str | None) -> None:
    """Reject an `ns_dtype` that `resolve_ns_dtype` could not resolve (at construction, before any step)."""
    if not (choice is None or isinstance(choice, torch.dtype) or choice == "auto" or choice in NAMED_NS_DTYPES):
        raise ValueError(f"ns_dtype must be a torch dtype, 'auto', 'bf16' or 'fp32'; got {choice!r}")


def resolve_ns_dtype(choice: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A Muon group's `ns_dtype` as a dtype: a dtype as given, "bf16"/"fp32" by name, None or "auto" by device."""
    check_ns_dtype(choice)
    if isinstance(choice, torch.dtype):
        return choice
    if choice is None or choice == "auto":
        return default_ns_dtype(device)
    return NAMED_NS_DTYPES[choice]
