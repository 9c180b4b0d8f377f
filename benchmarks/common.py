"""Shared helpers of the benchmark scripts: a machine-speed unit measured in the same process."""

from __future__ import annotations

import time

import torch


def machine_unit_s(size: int = 512, repeats: int = 20, trials: int = 3) -> float:
    """Best-of-`trials` seconds for `repeats` fp32 [size x size] matmuls: divides out machine noise."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return best
