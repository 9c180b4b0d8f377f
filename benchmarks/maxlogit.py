"""What S_max tracking + QK-Clip cost in a training step of the tiny K2 model, and the C++ kernel against the reference.

    .venv/bin/python benchmarks/maxlogit.py [--batch 8 --seq 128 --steps 10 --threads 1]

Two full training steps (forward, backward, Muon step) are timed against each other in the same process:
- with: the model as it trains (every attention layer records S_max through ``k2core.kernels.max_logit_mla`` beside
  SDPA), followed by ``apply_qk_clip`` at tau = 100 on the step's S_max (as the trainer does);
- without: the same step with each layer's ``record_max_logit`` replaced by a no-op, and no clip.
Both start from the same weights and step with lr = 0 (Muon does all its work, the weights stay put), so the two
models stay identical and route every token to the same experts: the steps differ only by the tracking and the clip.
Beside them, per step: the kernel on every layer's q/k (captured once), the chunked torch reference, a separate
S_max pass that materialises the logits, and ``apply_qk_clip`` with nothing / everything clipped; and, forward only,
the model's attention forward (SDPA + kernel) against the fused C++ attention forward ``attention_max_logit`` that
yields S_max in the same pass. Defaults are the tiny profile's pretraining batch (8 x 128). Prints JSON; the target
is (with - without) / without <= 5%, with the clip's worst case (every head clipped instead of none) added.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_unit_s  # noqa: E402
from k2core.kernels import attention_max_logit, backend, max_logit_mla, max_logit_reference  # noqa: E402
from k2core.model import K2Config, K2ForCausalLM  # noqa: E402
from k2core.model.attention import MLAttention  # noqa: E402
from k2core.model.layers import attend  # noqa: E402
from k2core.optim import Muon, apply_qk_clip, muon_param_groups  # noqa: E402

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def best_ms(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best-of-`rounds` CPU milliseconds of this process per case after one warm-up, the cases interleaved round by
    round. CPU time, not wall time: on a shared machine wall time mostly measures waiting for a core."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):
        for name, fn in cases.items():
            start = time.process_time()
            fn()
            if round_:
                times[name].append(time.process_time() - start)
    return {name: min(samples) * 1e3 for name, samples in times.items()}


def attentions(model: K2ForCausalLM) -> list[MLAttention]:
    return [m for m in model.modules() if isinstance(m, MLAttention)]


def capture_qk(model: K2ForCausalLM, ids: torch.Tensor) -> list[tuple[MLAttention, Split, QKV]]:
    """Every layer's (q^C, q^R, k^C, shared k^R) and whole (q, k, v) for `ids`, recomputed from the inputs its
    attention received."""
    inputs: list[tuple[MLAttention, tuple]] = []
    handles = [m.register_forward_pre_hook(lambda mod, args: inputs.append((mod, args))) for m in attentions(model)]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    split = []
    with torch.no_grad():
        for attn, (x, cos, sin, _allowed, *_) in inputs:
            q, k, v, _ = attn.project(x, cos, sin, None)
            q_nope, q_rope = q.split([attn.nope_dim, attn.rope_dim], dim=-1)
            k_nope, k_rope = k.split([attn.nope_dim, attn.rope_dim], dim=-1)
            split.append((attn, (q_nope, q_rope, k_nope, k_rope[:, :1]), (q, k, v)))
    return split


def training_step(model: K2ForCausalLM, ids: torch.Tensor, after: Callable[[], object]) -> Callable[[], None]:
    """One forward + backward + Muon step (lr = 0: the full update is computed, nothing moves) on `ids`, then
    `after()` (the clip, or nothing)."""
    optimizer = Muon(muon_param_groups(model, 0.0, 0.1), lr=0.0, weight_decay=0.1)

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        after()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed rounds (best of)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = K2Config.preset("tiny")
    model = K2ForCausalLM(config).train()
    untracked = copy.deepcopy(model)
    for attn in attentions(untracked):
        attn.record_max_logit = lambda *_: None  # type: ignore[method-assign]
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq))

    captured = capture_qk(model, ids)
    layers = [(attn, pieces) for attn, pieces, _ in captured]
    causal = torch.ones(args.seq, args.seq, dtype=torch.bool).tril()[None, None]
    s_max = torch.linspace(10.0, 40.0, config.num_attention_heads)  # per-head maxima recorded before each clip

    def clip(tau: float) -> Callable[[], object]:
        def run() -> object:
            for attn, _ in layers:  # part of the timed call, and negligible: H floats per layer
                attn.max_logit.copy_(s_max)
            return apply_qk_clip(model, tau)
        return run

    clip_all = clip(float(s_max.min()) / 2)

    @torch.no_grad()
    def kernel() -> None:
        for attn, pieces in layers:
            max_logit_mla(*pieces, attn.scale)

    @torch.no_grad()
    def reference() -> None:
        for attn, (qn, qr, kn, kr) in layers:
            max_logit_reference([(qn, kn), (qr, kr)], attn.scale)

    @torch.no_grad()
    def materialised() -> None:  # a separate S_max pass that builds the logits
        for attn, (qn, qr, kn, kr) in layers:
            logits = torch.cat([qn, qr], -1) @ torch.cat([kn, kr.expand_as(qr)], -1).transpose(-1, -2) * attn.scale
            logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3))

    @torch.no_grad()
    def sdpa_and_kernel() -> None:  # the model's training-forward attention: SDPA, then S_max by the kernel
        for attn, pieces, (q, k, v) in captured:
            max_logit_mla(*pieces, attn.scale)
            attend(q, k, v, causal, None, attn.scale)

    @torch.no_grad()
    def fused() -> None:
        for attn, _, (q, k, v) in captured:
            attention_max_logit(q, k, v, attn.scale)

    ms = best_ms({"with": training_step(model, ids, lambda: apply_qk_clip(model, 100.0)),
                  "without": training_step(untracked, ids, lambda: None),
                  "clip_none": clip(float(s_max.max()) + 1.0), "clip_all": clip_all, "kernel": kernel,
                  "reference": reference, "materialised": materialised, "sdpa_and_kernel": sdpa_and_kernel,
                  "fused": fused}, args.steps)
    with_ms, without_ms, kernel_ms, all_ms = ms["with"], ms["without"], ms["kernel"], ms["clip_all"]
    overhead = (with_ms + all_ms - ms["clip_none"]) / without_ms - 1  # the clip at its worst
    print(json.dumps({
        "model": "tiny", "batch": args.batch, "seq": args.seq, "layers": len(layers),
        "heads": config.num_attention_heads,
        "threads": args.threads, "kernel_backend": backend("cpu"), "machine_unit_s": round(machine_unit_s(), 4),
        "step_ms_with_tracking_and_clip": round(with_ms, 2),
        "step_ms_without": round(without_ms, 2),
        "overhead_over_step_without": round(with_ms / without_ms - 1, 4),
        "overhead_with_every_head_clipped": round(overhead, 4),
        "clip_ms_nothing_clipped": round(ms["clip_none"], 3),
        "clip_ms_all_heads_clipped": round(all_ms, 3),
        "kernel_ms_all_layers": round(kernel_ms, 3),
        "reference_ms_all_layers": round(ms["reference"], 3),
        "materialised_pass_ms_all_layers": round(ms["materialised"], 3),
        "kernel_and_clip_over_step_without": round((kernel_ms + all_ms) / without_ms, 4),
        "reference_over_kernel": round(ms["reference"] / kernel_ms, 2),
        "materialised_over_kernel": round(ms["materialised"] / kernel_ms, 2),
        "forward_ms_sdpa_and_kernel_all_layers": round(ms["sdpa_and_kernel"], 3),
        "forward_ms_fused_all_layers": round(ms["fused"], 3),
        "fused_over_sdpa_and_kernel": round(ms["fused"] / ms["sdpa_and_kernel"], 3),
        "target_overhead_le_5pct": overhead <= 0.05,
    }, indent=2))


if __name__ == "__main__":
    main()
