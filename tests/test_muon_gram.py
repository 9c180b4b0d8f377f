"""Muon's fast path: Gram Newton-Schulz, fused bucketed updates and the hardware-picked precision, against the
float64 K2 update, the standard iteration, the per-matrix step and torch.optim.Muon."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2core.optim import Muon
from k2core.optim import ns_precision
from k2core.optim.newton_schulz import gram_newton_schulz, gram_newton_schulz_flops, newton_schulz, uses_gram
from k2core.optim.reference import k2_muon_fp64, relative_error

LR, WD = 0.02, 0.1
# Gram-eligible (aspect >= 2) wide and tall matrices, expert stacks sharing a short side with them, and shapes that
# take the standard iteration (square, aspect 1.5).
SHAPES = [(16, 48), (48, 16), (3, 16, 40), (2, 64, 16), (32, 32), (24, 36), (8, 40), (16, 48)]


def _train(shapes, steps: int, groups=None, **muon_kwargs) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    opt = Muon(groups(params) if groups else params, lr=LR, weight_decay=WD, **muon_kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (3, 24, 96), (2, 96, 24), (8, 40)])
@pytest.mark.parametrize("steps", [0, 1, 2, 5])
def test_gram_iteration_equals_the_standard_one_in_fp64(shape, steps):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gram = gram_newton_schulz(x, steps=steps, dtype=torch.float64)
    torch.testing.assert_close(gram, newton_schulz(x, steps=steps, dtype=torch.float64), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("gram", [True, False])
def test_bucketed_step_equals_the_per_matrix_step_in_fp64(gram):
    """Gram buckets (by short side, 3-D experts unbound into them) and standard buckets, decay fused into the update,
    against each parameter orthogonalised alone in torch's op order."""
    bucketed = _train(SHAPES, steps=3, ns_dtype=torch.float64, gram=gram)
    per_matrix = _train(SHAPES, steps=3, ns_dtype=torch.float64, batched=False)
    for b, p in zip(bucketed, per_matrix):
        torch.testing.assert_close(b, p, rtol=1e-12, atol=1e-12)


def test_bucketed_row_blocks_equal_the_per_matrix_step_in_fp64():
    shapes = [(3, 32, 12), (3, 32, 12)]
    groups = lambda ps: [{"params": ps, "row_blocks": 2}]  # noqa: E731
    bucketed = _train(shapes, steps=2, groups=groups, ns_dtype=torch.float64)
    per_matrix = _train(shapes, steps=2, groups=groups, ns_dtype=torch.float64, batched=False)
    for b, p in zip(bucketed, per_matrix):
        torch.testing.assert_close(b, p, rtol=1e-12, atol=1e-12)


def _errors_vs_fp64(shape, factories: dict, steps: int = 3, seed: int = 2) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    init, grads = torch.randn(shape, generator=gen), [torch.randn(shape, generator=gen) for _ in range(steps)]
    reference = k2_muon_fp64(init, grads, LR, WD)
    errors = {}
    for label, factory in factories.items():
        p = nn.Parameter(init.clone())
        opt = factory([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        errors[label] = relative_error(p.detach(), reference, init)
    return errors


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 32), (64, 256), (192, 128)])
def test_fp32_modes_stay_within_1e_4_of_the_fp64_update(shape):
    errors = _errors_vs_fp64(shape, {
        "exact": lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype="fp32", gram=False),
        "gram": lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype="fp32"),
        "per_matrix": lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype="fp32", batched=False),
    })
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 32), (64, 256)])
def test_auto_and_bf16_modes_are_no_less_faithful_than_torch_muon(shape):
    errors = _errors_vs_fp64(shape, {
        "torch": lambda ps: torch.optim.Muon(ps, lr=LR, weight_decay=WD, adjust_lr_fn="match_rms_adamw"),
        "auto": lambda ps: Muon(ps, lr=LR, weight_decay=WD),
        "bf16": lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype="bf16"),
    })
    assert errors["auto"] <= errors["torch"] and errors["bf16"] <= errors["torch"], errors


def test_gram_runs_only_in_fp32_or_wider_and_on_strongly_rectangular_shapes():
    assert uses_gram(64, 256, torch.float32) and uses_gram(256, 64, torch.float64)
    assert not uses_gram(64, 256, torch.bfloat16) and not uses_gram(64, 256, torch.float32, allowed=False)
    assert not uses_gram(128, 192, torch.float32) and not uses_gram(256, 256, torch.float32)
    assert gram_newton_schulz_flops(256, 768) < 0.7 * 5 * (4 * 256**2 * 768 + 2 * 256**3)


def test_bf16_probe_demands_a_clear_speedup(monkeypatch):
    for fp32_s, bf16_s, fast in [(1.0, 0.5, True), (1.0, 0.8, False), (1.0, 10.0, False)]:
        monkeypatch.setattr(ns_precision, "_best_matmul_seconds",
                            lambda dtype, device, f=fp32_s, b=bf16_s: f if dtype == torch.float32 else b)
        ns_precision.bf16_matmul_is_fast.cache_clear()
        assert ns_precision.bf16_matmul_is_fast("cpu") is fast
    ns_precision.bf16_matmul_is_fast.cache_clear()


def test_ns_dtype_names_are_checked_at_construction():
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([nn.Parameter(torch.zeros(4, 8))], lr=LR, ns_dtype="fp16")
    assert ns_precision.resolve_ns_dtype("fp32", torch.device("cpu")) == torch.float32


def test_state_saved_without_the_gram_option_loads_and_steps():
    p = nn.Parameter(torch.randn(16, 48))
    p.grad = torch.randn(16, 48)
    opt = Muon([p], lr=LR, weight_decay=WD)
    opt.step()
    saved = opt.state_dict()
    del saved["param_groups"][0]["gram"]
    fresh = Muon([p], lr=LR, weight_decay=WD, gram=False)
    fresh.load_state_dict(saved)
    fresh.step()
    assert fresh.param_groups[0]["gram"] is True
