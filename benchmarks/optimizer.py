"""One optimizer step on the Muon matrices of a K2 preset: our Muon against torch.optim.Muon, DeepSpeed's Muon
update and torch AdamW, plus Newton-Schulz GFLOP/s against the fp32 matmul rate, all measured in this process.

    .venv/bin/python benchmarks/optimizer.py [--presets tiny small] [--rounds 7] [--small-experts 4] [--threads 1]

Every contender updates the same matrices from the same gradients. `ours` is the default (Newton-Schulz dtype picked
by the hardware probe, shape buckets, Gram iteration for strongly rectangular fp32 matrices), `ours_per_matrix` the
per-matrix path in torch's op order (`batched=False`), `ours_bf16_ns` bf16 Newton-Schulz. benchmarks/muon_step.py
times the Muon step alone on fixed tiny and small shapes, with each contender's error against the fp64 update.
3-D expert stacks are one parameter for ours (batched per stack), one `is_expert_group` parameter for
DeepSpeed (its batched path) and one 2-D parameter per expert for torch.optim.Muon (which rejects 3-D).
DeepSpeed's `muon_update` is decorated with torch.compile; it runs eager here (dynamo disabled), since
compiling one graph per shape with inductor does not fit a 2-core CPU run.
`small` is too big to step whole on a 2-core CPU: only layer 1 (a MoE layer: attention, router, shared expert)
with `--small-experts` of its 48 routed experts is used, and torch.optim.Muon runs there only with
`--torch-small`, to keep the default run short.

Prints JSON: seconds per step (best and median of `--rounds` interleaved steps, after one warm-up step),
ratios against ours, and Newton-Schulz FLOP rates (FLOPs counted as 5 * (4 n^2 m + 2 n^3) per matrix, n <= m).
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

from k2core.model import K2Config, K2ForCausalLM  # noqa: E402
from k2core.optim import Muon, muon_param_groups  # noqa: E402
from k2core.optim.muon import newton_schulz, newton_schulz_flops  # noqa: E402

LR, WD, MOMENTUM = 2e-4, 0.1, 0.95
TIME_KEY = "cpu_best"  # rates use best process-CPU time; see interleaved_times


def muon_shapes(preset: str, small_experts: int) -> list[tuple[int, ...]]:
    """Shapes of the Muon matrices of a preset (a one-MoE-layer subset for `small`).

    A fused parameter of `row_blocks=k` (the experts' [gate; up]) is listed as its k separate matrices, which is
    what every contender should orthogonalise.
    """
    overrides = {} if preset == "tiny" else dict(num_hidden_layers=2, vocab_size=256)
    with torch.device("meta"):
        model = K2ForCausalLM(K2Config.preset(preset, **overrides))
    shapes = []
    for group in (g for g in muon_param_groups(model, LR, WD) if g["use_muon"]):
        blocks = group["row_blocks"]
        for name, p in zip(group["param_names"], group["params"]):
            if preset != "tiny" and not name.startswith("model.layers.1."):
                continue
            *lead, rows, cols = p.shape
            count = (min(lead[0], small_experts) if preset != "tiny" else lead[0]) if lead else 1
            shapes.append((count * blocks, rows // blocks, cols) if count * blocks > 1 else (rows, cols))
    return shapes


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, dict[str, float]]:
    """Best and median wall and process-CPU seconds per callable, over `rounds` interleaved calls after a warm-up.

    Interleaving spreads load changes on a shared machine over every contender; CPU time (meaningful with one
    thread) excludes the time this process waits for a core another process holds.
    """
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
    return {
        label: {
            "cpu_best": min(cpu[label]),
            "cpu_median": statistics.median(cpu[label]),
            "wall_best": min(wall[label]),
            "wall_median": statistics.median(wall[label]),
        }
        for label in steps
    }


def make_params(shapes: list[tuple[int, ...]], split_experts: bool, seed: int = 0) -> list[nn.Parameter]:
    """Same values for every contender; `split_experts` gives one 2-D parameter per expert."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        weight, grad = torch.randn(shape, generator=gen) * 0.02, torch.randn(shape, generator=gen)
        pairs = list(zip(weight, grad)) if split_experts and len(shape) == 3 else [(weight, grad)]
        for w, g in pairs:
            p = nn.Parameter(w.clone())
            p.grad = g.clone()
            p.is_expert_group = w.ndim == 3  # read by DeepSpeed's Muon step
            params.append(p)
    return params


def deepspeed_step(params: list[nn.Parameter], state: dict[int, Tensor]) -> None:
    """DeepSpeed 0.19.8's SingleDeviceMuon step body: its `muon_update` (Gram NS by default), wd, lr."""
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs its accelerator choice to stdout
        from deepspeed.runtime.zero.muon.original_muon import muon_update

    with torch.no_grad(), torch._dynamo.config.patch(disable=True):
        for p in params:
            buf = state.setdefault(id(p), torch.zeros_like(p))
            update = muon_update(p.grad, buf, beta=MOMENTUM, is_expert_group=p.is_expert_group)
            p.mul_(1 - LR * WD)
            p.add_(update.reshape(p.shape), alpha=-LR)


def ns_rates(shapes: list[tuple[int, ...]], rounds: int) -> dict[str, float]:
    """Achieved GFLOP/s of fp32 NS, per matrix and batched per shape bucket (standard iteration), vs fp32 matmul rates
    measured alongside: a 1024^2 matmul, and the first NS product (X X^T) on the same stacks."""
    buckets: dict[tuple[int, int], int] = {}
    for shape in shapes:
        n, m = sorted(shape[-2:])
        buckets[(n, m)] = buckets.get((n, m), 0) + (shape[0] if len(shape) == 3 else 1)
    stacks = [torch.randn(k, n, m) for (n, m), k in buckets.items()]
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = interleaved_times({
        "ns_per_matrix": lambda: [newton_schulz(matrix) for s in stacks for matrix in s],
        "ns_batched": lambda: [newton_schulz(s) for s in stacks],
        "bmm": lambda: [torch.bmm(s, s.mT) for s in stacks],
        "mm": lambda: a @ b,
    }, rounds)
    flops = sum(k * newton_schulz_flops(n, m) for (n, m), k in buckets.items())
    rates = {label: flops / best[label][TIME_KEY] / 1e9 for label in ("ns_per_matrix", "ns_batched")}
    bmm_rate = sum(2 * s.size(0) * s.size(1) ** 2 * s.size(2) for s in stacks) / best["bmm"][TIME_KEY] / 1e9
    mm_rate = 2 * 1024**3 / best["mm"][TIME_KEY] / 1e9
    return {
        "matmul_fp32_1024_gflops": round(mm_rate, 2),
        "bmm_fp32_same_shapes_gflops": round(bmm_rate, 2),
        **{f"{label}_fp32_s": round(best[label][TIME_KEY], 5) for label in rates},
        **{f"{label}_gflops": round(rate, 2) for label, rate in rates.items()},
        **{f"{label}_fraction_of_matmul_rate": round(rate / mm_rate, 3) for label, rate in rates.items()},
    }


def bench_preset(preset: str, args: argparse.Namespace) -> dict[str, object]:
    shapes = muon_shapes(preset, args.small_experts)

    def stepper(split: bool, factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer]) -> Callable[[], None]:
        return factory(make_params(shapes, split_experts=split)).step

    ds_params, ds_state = make_params(shapes, split_experts=False), {}
    steps = {
        "ours": stepper(False, lambda ps: Muon(ps, lr=LR, weight_decay=WD, momentum=MOMENTUM)),
        "ours_per_matrix": stepper(False, lambda ps: Muon(ps, lr=LR, weight_decay=WD, batched=False)),
        "ours_bf16_ns": stepper(False, lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype=torch.bfloat16)),
        "deepspeed_muon": lambda: deepspeed_step(ds_params, ds_state),
        "adamw": stepper(False, lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, betas=(0.9, 0.95))),
    }
    if preset == "tiny" or args.torch_small:
        steps["torch_muon"] = stepper(
            True, lambda ps: torch.optim.Muon(ps, lr=LR, weight_decay=WD, adjust_lr_fn="match_rms_adamw"))
    timings = interleaved_times(steps, args.rounds)
    return {
        "preset": preset,
        "subset": "all Muon matrices" if preset == "tiny" else f"layer 1 only, {args.small_experts} routed experts",
        "matrices": sum(s[0] if len(s) == 3 else 1 for s in shapes),
        "parameters": sum(torch.Size(s).numel() for s in shapes),
        "ns_flops_per_step": sum((s[0] if len(s) == 3 else 1) * newton_schulz_flops(*s[-2:]) for s in shapes),
        "step_s": {k: {stat: round(v, 5) for stat, v in t.items()} for k, t in timings.items()},
        "speedup_of_ours": {
            stat: {k: round(t[stat] / timings["ours"][stat], 2) for k, t in timings.items() if k != "ours"}
            for stat in ("cpu_best", "cpu_median", "wall_best", "wall_median")
        },
        "newton_schulz": ns_rates(shapes, args.rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per contender (interleaved)")
    parser.add_argument("--small-experts", type=int, default=4)
    parser.add_argument("--torch-small", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads; 1 makes CPU time meaningful")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    results = [bench_preset(p, args) for p in args.presets]
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "deepspeed_muon_mode": "eager",
        "load_average_at_start": load,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
