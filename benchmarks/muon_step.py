"""One Muon step on tiny and small matrix shapes: k2's Muon against torch.optim.Muon and DeepSpeed's Muon, side by
side in one process, with each one's error against the float64 K2 update.

    .venv/bin/python benchmarks/muon_step.py [--rounds 5] [--threads N] [--copies 4]

Matrices: `--copies` each of (128,256), (192,128), (96,256), (256,64), (256,256), (768,256), (256,768) (28 by
default), the same weights and gradients for every contender. Contenders, all computing the K2 update (Newton-Schulz
direction scaled 0.2 sqrt(max(n, m)), decoupled weight decay with the unscaled lr):
- k2: `k2core.optim.Muon` with its defaults (Newton-Schulz dtype picked by the hardware probe, shape buckets, Gram
  iteration for strongly rectangular fp32 matrices);
- torch: `torch.optim.Muon(adjust_lr_fn="match_rms_adamw")` (bf16 Newton-Schulz);
- deepspeed: DeepSpeed's `muon_update` (Gram Newton-Schulz by default; fp32 on CPU), eager (its torch.compile
  wrapper disabled, as in benchmarks/optimizer.py), the SingleDeviceMuon step body with each matrix's lr rescaled
  from DeepSpeed's max(1, rows/cols)^0.5 to K2's 0.2 sqrt(max(n, m)).

Timing: one warm-up step each, then `--rounds` interleaved rounds (k2, torch, deepspeed, k2, ...), wall and process
CPU seconds, at torch's thread count (the machine's unless `--threads`). Error: two steps from the same start on
Gaussian gradients and on ill-conditioned ones (singular values spread over 1 .. 1e-4), each contender's largest
relative Frobenius error over the matrices against `k2core.optim.reference.k2_muon_fp64`; k2's exact mode
(fp32, standard iteration) and forced-bf16 mode are reported alongside. Prints one JSON; `run()` returns it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k2core.optim import Muon  # noqa: E402
from k2core.optim.muon import muon_lr_scale  # noqa: E402
from k2core.optim.ns_precision import bf16_matmul_is_fast, default_ns_dtype  # noqa: E402
from k2core.optim.reference import k2_muon_fp64, relative_error  # noqa: E402

SHAPES: tuple[tuple[int, int], ...] = ((128, 256), (192, 128), (96, 256), (256, 64), (256, 256), (768, 256),
                                       (256, 768))
LR, WD, MOMENTUM = 0.02, 0.1, 0.95
Stepper = Callable[[list[nn.Parameter]], Callable[[], None]]


def _deepspeed_stepper(params: list[nn.Parameter]) -> Callable[[], None]:
    """DeepSpeed's SingleDeviceMuon step body on `params`, each matrix's lr set so that it makes the K2 update."""
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs its accelerator choice to stdout
        from deepspeed.runtime.zero.muon.original_muon import muon_update

    state = {id(p): torch.zeros_like(p) for p in params}
    # DeepSpeed scales its update by max(1, rows/cols)^0.5; K2 by 0.2 sqrt(max(n, m)).
    alphas = [LR * muon_lr_scale(p.shape) / max(1.0, p.size(-2) / p.size(-1)) ** 0.5 for p in params]

    def step() -> None:
        with torch.no_grad(), torch._dynamo.config.patch(disable=True):
            for p, alpha in zip(params, alphas):
                update = muon_update(p.grad, state[id(p)], beta=MOMENTUM)
                p.mul_(1 - LR * WD)
                p.add_(update.reshape(p.shape), alpha=-alpha)

    return step


def _optimizer_stepper(factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer]) -> Stepper:
    return lambda params: factory(params).step


CONTENDERS: dict[str, Stepper] = {
    "k2": _optimizer_stepper(lambda ps: Muon(ps, lr=LR, weight_decay=WD, momentum=MOMENTUM)),
    "torch": _optimizer_stepper(lambda ps: torch.optim.Muon(ps, lr=LR, weight_decay=WD, momentum=MOMENTUM,
                                                            adjust_lr_fn="match_rms_adamw")),
    "deepspeed": _deepspeed_stepper,
}
ERROR_ONLY: dict[str, Stepper] = {
    "k2_exact_fp32": _optimizer_stepper(lambda ps: Muon(ps, lr=LR, weight_decay=WD, momentum=MOMENTUM,
                                                        ns_dtype="fp32", gram=False)),
    "k2_bf16": _optimizer_stepper(lambda ps: Muon(ps, lr=LR, weight_decay=WD, momentum=MOMENTUM, ns_dtype="bf16")),
}


def matrix_shapes(copies: int) -> list[tuple[int, int]]:
    return [shape for shape in SHAPES for _ in range(copies)]


def _ill_conditioned(shape: tuple[int, int], gen: torch.Generator) -> Tensor:
    """A random matrix with singular values log-spaced over [1e-4, 1]."""
    n = min(shape)
    left = torch.linalg.qr(torch.randn(shape[0], n, generator=gen))[0]
    right = torch.linalg.qr(torch.randn(shape[1], n, generator=gen))[0]
    return left @ torch.diag(torch.logspace(0, -4, n)) @ right.T


def _inputs(shapes: list[tuple[int, int]], steps: int, kind: str, seed: int) -> tuple[list[Tensor], list[list[Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    inits = [torch.randn(s, generator=gen) * 0.02 for s in shapes]
    draw = (lambda s: torch.randn(s, generator=gen)) if kind == "gaussian" else (lambda s: _ill_conditioned(s, gen))
    return inits, [[draw(s) for _ in range(steps)] for s in shapes]


def max_errors(shapes: list[tuple[int, int]], contenders: dict[str, Stepper], kind: str, steps: int = 2,
               seed: int = 1) -> dict[str, float]:
    """Each contender's largest relative update error over the matrices after `steps` steps, vs the fp64 K2 update."""
    inits, grads = _inputs(shapes, steps, kind, seed)
    references = [k2_muon_fp64(w, g, LR, WD, MOMENTUM) for w, g in zip(inits, grads)]
    errors = {}
    for label, stepper in contenders.items():
        params = [nn.Parameter(w.clone()) for w in inits]
        step = stepper(params)
        for t in range(steps):
            for p, g in zip(params, grads):
                p.grad = g[t].clone()
            step()
        errors[label] = max(relative_error(p.detach(), ref, w) for p, ref, w in zip(params, references, inits))
    return errors


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, dict[str, float]]:
    """Median and best wall / process-CPU milliseconds per step, over `rounds` interleaved rounds after a warm-up."""
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {label: [] for label in steps}
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step()
            cpu[label].append(time.process_time() - start_cpu)
            wall[label].append(time.perf_counter() - start_wall)
    return {label: {"wall_median_ms": round(1e3 * statistics.median(wall[label]), 2),
                    "wall_best_ms": round(1e3 * min(wall[label]), 2),
                    "cpu_median_ms": round(1e3 * statistics.median(cpu[label]), 2)} for label in steps}


def timings(shapes: list[tuple[int, int]], rounds: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Interleaved step times of every contender on its own copy of the same weights and gradients."""
    inits, grads = _inputs(shapes, 1, "gaussian", seed)
    steps = {}
    for label, stepper in CONTENDERS.items():
        params = [nn.Parameter(w.clone()) for w in inits]
        for p, g in zip(params, grads):
            p.grad = g[0].clone()
        steps[label] = stepper(params)
    return interleaved_times(steps, rounds)


def run(rounds: int = 5, threads: int | None = None, copies: int = 4) -> dict[str, object]:
    """The benchmark as a dict (for benchmarks/compare.py): timings, k2's ratio to the faster peer, errors."""
    if threads is not None:
        torch.set_num_threads(threads)
    shapes = matrix_shapes(copies)
    load = os.getloadavg()[0]
    times = timings(shapes, rounds)
    peers = {label: t["wall_median_ms"] for label, t in times.items() if label != "k2"}
    faster_peer = min(peers, key=peers.get)
    everyone = {**CONTENDERS, **ERROR_ONLY}
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_matmul_is_fast": bf16_matmul_is_fast("cpu"),
        "k2_auto_ns_dtype": str(default_ns_dtype(torch.device("cpu"))).removeprefix("torch."),
        "load_average_at_start": load,
        "matrices": len(shapes),
        "shapes": [list(s) for s in SHAPES],
        "copies_per_shape": copies,
        "rounds": rounds,
        "step": times,
        "faster_peer": faster_peer,
        "k2_speedup_vs_faster_peer": round(peers[faster_peer] / times["k2"]["wall_median_ms"], 3),
        # One matrix per shape: the error does not depend on how many share a bucket (the tests check that).
        "max_relative_error_vs_fp64": {
            kind: {k: float(f"{v:.3g}") for k, v in max_errors(matrix_shapes(1), everyone, kind).items()}
            for kind in ("gaussian", "ill_conditioned")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per contender (interleaved)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--copies", type=int, default=4, help="matrices per shape")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps(run(args.rounds, args.threads, args.copies), indent=2))


if __name__ == "__main__":
    main()
