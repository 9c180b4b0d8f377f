"""Training-step throughput (forward + backward) of k2's K2ForCausalLM against transformers' DeepseekV3ForCausalLM.

    .venv/bin/python benchmarks/train_step.py [--rounds 7 --steps 3 --vocab 4096 --dtypes fp32 bf16]

Both models are built from one config (the tiny preset, vocab 4096 by default) and hold the same weights: k2's
parameter names and shapes are transformers' (``tests/test_model_hf_parity.py``), so its state dict loads as is.
k2 trains as the trainer runs it: training mode, S_max (per-head max logit) recorded in every attention layer.
transformers runs with SDPA attention and its ``eager`` and ``grouped_mm`` experts implementations (``batched_mm``
was 2-3x slower than both on this CPU); the ratio is taken against the faster one. Each shape is timed in fp32 and
under CPU bf16 autocast (fp32 master weights, both models under the same autocast; bf16 only where the CPU has
native bf16, unless --force-bf16).

Rounds interleave the contenders; each round times ``--steps`` steps (gradients set to None, forward with labels,
backward) in wall time at torch.get_num_threads(); the figure is the median round. Fidelity: max |logits| and |loss|
differences between k2 and each transformers variant on the same batch in fp32. Prints one JSON object; ``run``
returns it (for benchmarks/compare.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_unit_s  # noqa: E402
from k2core.model import K2Config, K2ForCausalLM  # noqa: E402
from k2core.train.precision import cpu_has_bf16  # noqa: E402

SHAPES = ((8, 128), (2, 512))
HF_EXPERTS = ("eager", "grouped_mm")  # batched_mm measured 2-3x slower than both here


def hf_model(config: K2Config, weights: dict[str, torch.Tensor], experts: str) -> nn.Module:
    """transformers' DeepseekV3ForCausalLM for ``config`` with SDPA attention, the given experts implementation
    and ``weights`` (a K2ForCausalLM state dict), in training mode."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    hf_config = DeepseekV3Config(**config.to_hf_dict())
    hf_config._attn_implementation = "sdpa"
    hf_config._experts_implementation = experts
    model = DeepseekV3ForCausalLM(hf_config)
    model.load_state_dict(weights)
    return model.train()


def autocast(dtype: str) -> contextlib.AbstractContextManager[None]:
    """CPU bf16 autocast for "bf16", nothing for "fp32"."""
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step_fn(model: nn.Module, ids: torch.Tensor, dtype: str, steps: int) -> Callable[[], None]:
    """`steps` training steps (forward with labels, backward) on `ids`; gradients are dropped before each."""
    def run_steps() -> None:
        for _ in range(steps):
            for p in model.parameters():
                p.grad = None
            with autocast(dtype):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
    return run_steps


def median_s(cases: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median wall seconds per case over `rounds` interleaved rounds, after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def fidelity(ours: nn.Module, theirs: nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """Max |logits| and |loss| difference of the two models on `ids` in fp32 (training mode, no gradient)."""
    with torch.no_grad():
        a = ours(input_ids=ids, labels=ids)
        b = theirs(input_ids=ids, labels=ids)
    return {"max_abs_logits": float((a.logits - b.logits).abs().max()), "abs_loss": float((a.loss - b.loss).abs())}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded for the block (the model init), restored after."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def run(shapes: tuple[tuple[int, int], ...] = SHAPES, rounds: int = 7, steps: int = 3, vocab: int = 4096,
        preset: str = "tiny", dtypes: tuple[str, ...] = ("fp32", "bf16"), seed: int = 0, force_bf16: bool = False
        ) -> dict[str, object]:
    """Tokens/s of k2 and of every transformers experts variant per shape and dtype, the ratio of k2 to the
    fastest transformers variant, and the fp32 fidelity; see the module docstring. bf16 is skipped (and said so)
    on a CPU without native bf16 unless `force_bf16`."""
    config = K2Config.preset(preset, vocab_size=vocab)
    with seeded(seed):
        ours = K2ForCausalLM(config).train()
    weights = ours.state_dict()
    theirs = {experts: hf_model(config, weights, experts) for experts in HF_EXPERTS}
    skipped = {}
    if "bf16" in dtypes and not cpu_has_bf16() and not force_bf16:
        dtypes = tuple(d for d in dtypes if d != "bf16")
        skipped["bf16"] = "this CPU has no native bf16 (avx512_bf16/amx_bf16): bf16 matmuls are emulated"
    results: list[dict[str, object]] = []
    generator = torch.Generator().manual_seed(seed)
    for batch, seq in shapes:
        ids = torch.randint(0, vocab, (batch, seq), generator=generator)
        entry: dict[str, object] = {
            "batch": batch, "seq": seq,
            "fidelity_fp32": {name: fidelity(ours, model, ids) for name, model in theirs.items()},
        }
        for dtype in dtypes:
            cases = {"k2": step_fn(ours, ids, dtype, steps)}
            cases.update({f"hf_{name}": step_fn(model, ids, dtype, steps) for name, model in theirs.items()})
            seconds = median_s(cases, rounds)
            tokens = {name: batch * seq * steps / s for name, s in seconds.items()}
            best_hf = max((name for name in tokens if name != "k2"), key=tokens.__getitem__)
            entry[dtype] = {
                "tokens_per_s": {name: round(v, 1) for name, v in tokens.items()},
                "best_transformers": best_hf,
                "ratio_vs_best_transformers": round(tokens["k2"] / tokens[best_hf], 3),
                "ratio_vs_transformers_eager": round(tokens["k2"] / tokens["hf_eager"], 3),
            }
        results.append(entry)
    return {
        "preset": preset, "vocab_size": vocab, "threads": torch.get_num_threads(), "rounds": rounds,
        "steps_per_round": steps, "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__,
        "machine_unit_s": round(machine_unit_s(), 4), "load_average": [round(v, 2) for v in os.getloadavg()],
        "skipped": skipped, "shapes": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even without native CPU bf16")
    parser.add_argument("--shapes", nargs="+", default=[f"{b}x{t}" for b, t in SHAPES], help="BxT, e.g. 8x128")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = tuple(tuple(int(n) for n in shape.split("x")) for shape in args.shapes)
    print(json.dumps(run(shapes, rounds=args.rounds, steps=args.steps, vocab=args.vocab,  # type: ignore[arg-type]
                         preset=args.preset, dtypes=tuple(args.dtypes), force_bf16=args.force_bf16), indent=2))


if __name__ == "__main__":
    main()
