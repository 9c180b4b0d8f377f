"""Muon's batched shape buckets and hardware-picked Newton-Schulz precision against the per-matrix path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2core.optim import Muon, newton_schulz
from k2core.optim.muon import default_ns_dtype, newton_schulz_flops
from k2core.optim.ns_precision import bf16_matmul_is_fast

LR, WD = 0.02, 0.1
# Wide, tall and square matrices plus expert stacks that share buckets: (16, 48) with (48, 16) and the
# (3, 16, 48) / (2, 48, 16) experts; (32, 32) with the (4, 32, 32) stack; (8, 40) alone.
MIXED_SHAPES = [(16, 48), (48, 16), (32, 32), (3, 16, 48), (2, 48, 16), (4, 32, 32), (8, 40), (16, 48)]


def _train(shapes: list[tuple[int, ...]], steps: int, **muon_kwargs) -> tuple[list[torch.Tensor], Muon]:
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    opt = Muon(params, lr=LR, weight_decay=WD, **muon_kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach() for p in params], opt


def test_batched_buckets_equal_the_per_matrix_path_in_fp32():
    batched, _ = _train(MIXED_SHAPES, steps=5, ns_dtype=torch.float32, batched=True)
    single, _ = _train(MIXED_SHAPES, steps=5, ns_dtype=torch.float32, batched=False)
    for b, s in zip(batched, single):
        torch.testing.assert_close(b, s, rtol=1e-5, atol=1e-6)


def test_batched_bf16_stays_within_bf16_rounding_of_the_per_matrix_path():
    batched, _ = _train(MIXED_SHAPES, steps=3, ns_dtype=torch.bfloat16, batched=True)
    single, _ = _train(MIXED_SHAPES, steps=3, ns_dtype=torch.bfloat16, batched=False)
    init, _ = _train(MIXED_SHAPES, steps=0)
    for b, s, w0 in zip(batched, single, init):
        assert (b - s).abs().max() <= 0.05 * (s - w0).abs().max()


def test_newton_schulz_precision_follows_the_bf16_probe():
    fast = bf16_matmul_is_fast("cpu")
    assert default_ns_dtype(torch.device("cpu")) == (torch.bfloat16 if fast else torch.float32)
    g = torch.randn(16, 48, generator=torch.Generator().manual_seed(1))
    assert newton_schulz(g).dtype == torch.float32
    assert newton_schulz(g, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("batched", [True, False])
def test_cpu_default_is_exactly_the_probed_dtype_and_differs_from_the_other(batched):
    picked = default_ns_dtype(torch.device("cpu"))
    other = torch.float32 if picked == torch.bfloat16 else torch.bfloat16
    default, _ = _train(MIXED_SHAPES, steps=2, batched=batched)
    auto, _ = _train(MIXED_SHAPES, steps=2, ns_dtype="auto", batched=batched)
    forced, _ = _train(MIXED_SHAPES, steps=2, ns_dtype=picked, batched=batched)
    unpicked, _ = _train(MIXED_SHAPES, steps=2, ns_dtype=other, batched=batched)
    assert all(torch.equal(d, a) and torch.equal(d, f) for d, a, f in zip(default, auto, forced))
    assert not all(torch.equal(d, u) for d, u in zip(default, unpicked))


@pytest.mark.parametrize("batched", [True, False])
def test_plain_momentum_buffer_is_not_touched_by_newton_schulz(batched):
    """Without Nesterov the buffer itself is orthogonalised; it must stay the EMA of the gradients."""
    gen = torch.Generator().manual_seed(2)
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in MIXED_SHAPES]
    opt = Muon(params, lr=LR, nesterov=False, ns_dtype=torch.float32, batched=batched)
    expected = [torch.zeros(s) for s in MIXED_SHAPES]
    for _ in range(3):
        for p, e in zip(params, expected):
            p.grad = torch.randn(p.shape, generator=gen)
            e.lerp_(p.grad, 1 - 0.95)
        opt.step()
    for p, e in zip(params, expected):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], e, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (3, 16, 48), (3, 48, 16)])
def test_newton_schulz_leaves_its_input_alone(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    before = g.clone()
    newton_schulz(g)
    assert torch.equal(g, before)


def test_batched_stack_matches_each_matrix_orthogonalised_alone():
    stack = torch.randn(5, 24, 40, generator=torch.Generator().manual_seed(4))
    together = newton_schulz(stack)
    for i in range(5):
        torch.testing.assert_close(together[i], newton_schulz(stack[i]), rtol=1e-5, atol=1e-6)


def test_zero_gradient_in_a_shared_bucket_gives_exact_weight_decay():
    gen = torch.Generator().manual_seed(5)
    zero, busy = nn.Parameter(torch.randn(16, 48, generator=gen)), nn.Parameter(torch.randn(48, 16, generator=gen))
    before = zero.detach().clone()
    zero.grad, busy.grad = torch.zeros(16, 48), torch.randn(48, 16, generator=gen)
    Muon([zero, busy], lr=LR, weight_decay=WD).step()
    assert torch.equal(zero.detach(), before * (1 - LR * WD))


def test_newton_schulz_flops_counts_the_short_side_as_n():
    assert newton_schulz_flops(64, 128) == newton_schulz_flops(128, 64) == 5 * (4 * 64**2 * 128 + 2 * 64**3)


def test_default_is_the_bucketed_path():
    default, _ = _train(MIXED_SHAPES, steps=2)
    bucketed, _ = _train(MIXED_SHAPES, steps=2, batched=True)
    per_matrix, _ = _train(MIXED_SHAPES, steps=2, batched=False)
    assert all(torch.equal(d, b) for d, b in zip(default, bucketed))
    assert not all(torch.equal(d, p) for d, p in zip(default, per_matrix))
