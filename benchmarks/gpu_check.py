"""One-shot GPU check of the CUDA max-logit kernel: build it, compare it with the reference, time it.

    .venv/bin/python benchmarks/gpu_check.py [--quick]

Prints JSON and exits 1 when a check fails. Timings are best-of-N milliseconds per call with ratios against the
chunked torch reference and against materialised [B, H, T, T] logits (what the model does today), measured in the same
run, plus the peak extra GPU memory of each. On a machine without CUDA it checks the CPU kernel instead and says that
the CUDA part was skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k2core.kernels import build, max_logit, max_logit_mla, max_logit_reference  # noqa: E402
from k2core.kernels.reference import Pieces  # noqa: E402

# (batch, heads, seq, nope dim, rope dim (0: plain heads), shared rope key, dtype, with a key mask)
CHECKS = [
    (1, 1, 1, 8, 0, False, torch.float32, False),
    (2, 3, 7, 24, 0, False, torch.float32, False),
    (3, 2, 65, 40, 0, True, torch.float32, True),
    (2, 4, 130, 48, 0, False, torch.bfloat16, False),
    (1, 32, 97, 16, 0, True, torch.bfloat16, False),
    (2, 8, 257, 128, 64, True, torch.bfloat16, True),
    (1, 16, 1000, 64, 32, True, torch.float32, False),
]
TIMINGS = [  # the small profile's attention, and K2's (64 heads, 128 + 64 dims) at 2k and 4k tokens
    (16, 16, 1024, 64, 32, torch.bfloat16),
    (2, 64, 2048, 128, 64, torch.bfloat16),
    (1, 64, 4096, 128, 64, torch.bfloat16),
]


def _inputs(batch: int, heads: int, seq: int, nope: int, rope: int, shared: bool, dtype: torch.dtype,
            device: str, seed: int = 0) -> tuple[Pieces, float]:
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(h: int, d: int) -> torch.Tensor:
        return torch.randn(batch, h, seq, d, generator=g, device=device).to(dtype)

    pieces = [(rand(heads, nope), rand(heads, nope))]
    if rope:
        pieces.append((rand(heads, rope), rand(1 if shared else heads, rope)))
    elif shared:
        pieces = [(pieces[0][0], rand(1, nope))]
    return pieces, (nope + rope) ** -0.5


def _kernel(pieces: Pieces, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    if len(pieces) == 2:
        (qn, kn), (qr, kr) = pieces
        return max_logit_mla(qn, qr, kn, kr, scale, key_mask=mask)
    return max_logit(pieces[0][0], pieces[0][1], scale, key_mask=mask)


def _materialised(pieces: Pieces, scale: float) -> torch.Tensor:
    """The model's way: full logits in the input dtype, then a causal masked amax."""
    q = torch.cat([p[0] for p in pieces], dim=-1)
    k = torch.cat([p[1].expand_as(p[0]) for p in pieces], dim=-1)
    logits = (q @ k.transpose(-1, -2)) * scale
    seq = q.shape[2]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    return logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3)).float()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` milliseconds and the peak extra memory (MiB, CUDA only) of one call."""
    fn()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
    return best * 1e3, peak


def check(device: str, quick: bool) -> list[dict[str, object]]:
    rows = []
    for batch, heads, seq, nope, rope, shared, dtype, masked in CHECKS[:4] if quick else CHECKS:
        pieces, scale = _inputs(batch, heads, seq, nope, rope, shared, dtype, device)
        mask = None
        if masked:
            mask = torch.rand(batch, seq, device=device) > 0.3
        got = _kernel(pieces, scale, mask)
        want = max_logit_reference(pieces, scale, key_mask=mask)
        error = float((got - want).abs().max())
        rows.append({"shape": [batch, heads, seq, nope + rope], "split": bool(rope), "shared_key": shared,
                     "dtype": str(dtype).removeprefix("torch."), "key_mask": masked, "max_abs_error": error,
                     "ok": bool(torch.allclose(got, want, rtol=1e-5, atol=1e-4))})
    return rows


def timings(device: str, repeats: int) -> list[dict[str, object]]:
    rows = []
    for batch, heads, seq, nope, rope, dtype in TIMINGS:
        pieces, scale = _inputs(batch, heads, seq, nope, rope, True, dtype, device)
        kernel_ms, kernel_mib = _time(lambda: _kernel(pieces, scale, None), device, repeats)
        ref_ms, ref_mib = _time(lambda: max_logit_reference(pieces, scale), device, repeats)
        mat_ms, mat_mib = _time(lambda: _materialised(pieces, scale), device, repeats)
        flops = 2 * batch * heads * seq * (seq + 1) / 2 * (nope + rope)
        rows.append({
            "shape": [batch, heads, seq, nope, rope], "dtype": str(dtype).removeprefix("torch."),
            "kernel_ms": round(kernel_ms, 3), "reference_ms": round(ref_ms, 3), "materialised_ms": round(mat_ms, 3),
            "kernel_tflops": round(flops / kernel_ms / 1e9, 2),
            "reference_over_kernel": round(ref_ms / kernel_ms, 2),
            "materialised_over_kernel": round(mat_ms / kernel_ms, 2),
            "peak_extra_mib": {"kernel": round(kernel_mib, 1), "reference": round(ref_mib, 1),
                               "materialised": round(mat_mib, 1)},
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer correctness shapes")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    report: dict[str, object] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        report["cuda"] = "skipped: torch.cuda.is_available() is False (no GPU or a CPU-only torch)"
        device, kind = "cpu", "cpp"
    else:
        report["gpu"] = torch.cuda.get_device_name()
        report["capability"] = "sm_%d%d" % torch.cuda.get_device_capability()
        device, kind = "cuda", "cuda"
    started = time.perf_counter()
    try:
        build.compile_extension(kind)
    except Exception as exc:  # report the build failure itself, not the fallback's warning
        report.update({"backend": "torch", "build_error": str(exc)[-4000:], "ok": False})
        print(json.dumps(report, indent=2))
        sys.exit(1)
    report.update({"backend": kind, "build_s": round(time.perf_counter() - started, 1)})
    rows = check(device, args.quick)
    report["checks"] = rows
    if device == "cuda":
        report["timings"] = timings(device, args.repeats)
    report["ok"] = all(row["ok"] for row in rows)
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
