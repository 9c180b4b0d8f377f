"""Muon faithfulness: parity with torch.optim.Muon and a float64 reference, invariants, routing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2core.optim import Muon, muon_param_groups, newton_schulz
from k2core.optim.reference import k2_muon_fp64

LR, WD = 0.02, 0.1


def _grads(shape: tuple[int, ...], steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(steps)]


def _run(opt_factory, init: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    p = nn.Parameter(init.clone())
    opt = opt_factory([p])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("shape", [(16, 48), (48, 16)])
def test_bitwise_parity_with_torch_muon_in_bf16(shape):
    init = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    grads = _grads(shape, 10, seed=1)
    ours = _run(lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype=torch.bfloat16, batched=False), init, grads)
    ref = _run(lambda ps: torch.optim.Muon(ps, lr=LR, weight_decay=WD, adjust_lr_fn="match_rms_adamw"), init, grads)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 32)])
def test_fp32_path_matches_float64_sum_momentum_reference(shape):
    init = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    grads = _grads(shape, 10, seed=3)
    ours = _run(lambda ps: Muon(ps, lr=LR, weight_decay=WD, ns_dtype=torch.float32), init, grads)
    ref = k2_muon_fp64(init, grads, LR, WD)
    assert (ours.double() - ref).abs().max().item() < 1e-5


def _one_step_delta(init: torch.Tensor, grad: torch.Tensor, wd: float = 0.0) -> torch.Tensor:
    return _run(lambda ps: Muon(ps, lr=LR, weight_decay=wd), init, [grad]) - init


def test_update_is_invariant_to_gradient_scale():
    init = torch.zeros(24, 40)
    grad = torch.randn(24, 40)
    torch.testing.assert_close(_one_step_delta(init, grad), _one_step_delta(init, 7.5 * grad), rtol=1e-5, atol=1e-7)


def test_update_commutes_with_transpose():
    init = torch.zeros(24, 40)
    grad = torch.randn(24, 40)
    torch.testing.assert_close(_one_step_delta(init.T, grad.T), _one_step_delta(init, grad).T, rtol=1e-5, atol=1e-7)


def test_zero_gradient_only_applies_decoupled_weight_decay_with_unscaled_lr():
    init = torch.randn(24, 40)
    after = _run(lambda ps: Muon(ps, lr=LR, weight_decay=WD), init, [torch.zeros(24, 40)])
    assert torch.equal(after, init * (1 - LR * WD))


@pytest.mark.parametrize("shape", [(128, 128), (128, 512), (512, 128)])
def test_update_rms_matches_adamw_range(shape):
    delta = _one_step_delta(torch.zeros(shape), torch.randn(shape, generator=torch.Generator().manual_seed(4)))
    rms_over_lr = delta.pow(2).mean().sqrt().item() / LR
    assert 0.15 <= rms_over_lr <= 0.21


def test_newton_schulz_singular_values_near_one():
    g = torch.randn(96, 384, generator=torch.Generator().manual_seed(5))
    s = torch.linalg.svdvals(newton_schulz(g))
    assert s.min().item() >= 0.6 and s.max().item() <= 1.25


def test_expert_stack_is_orthogonalised_per_expert():
    init = torch.randn(3, 16, 24)
    grad = torch.randn(3, 16, 24)
    stacked = _run(lambda ps: Muon(ps, lr=LR, weight_decay=WD), init, [grad])
    for e in range(3):
        single = _run(lambda ps: Muon(ps, lr=LR, weight_decay=WD), init[e], [grad[e]])
        torch.testing.assert_close(stacked[e], single, rtol=1e-5, atol=1e-6)


def test_adamw_groups_match_torch_adamw():
    init = torch.randn(10)
    grads = _grads((10,), 5, seed=6)
    ours = _run(lambda ps: Muon([{"params": ps, "use_muon": False}], lr=LR, weight_decay=WD), init, grads)
    ref = _run(lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, betas=(0.9, 0.95), eps=1e-8), init, grads)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)


def test_muon_group_rejects_vectors():
    with pytest.raises(ValueError, match="muon_param_groups"):
        Muon([nn.Parameter(torch.zeros(4))], lr=LR)


class _MiniDeepseekNames(nn.Module):
    """Parameter names and shapes in the DeepseekV3 layout, without any forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(32, 8)
        self.q_proj = nn.Linear(8, 8, bias=False)
        self.norm = nn.RMSNorm(8)
        self.gate = nn.Linear(8, 4, bias=False)
        self.experts_down = nn.Parameter(torch.zeros(4, 8, 6))
        self.bias = nn.Parameter(torch.zeros(8))
        self.e_score_correction_bias = nn.Parameter(torch.zeros(4), requires_grad=False)
        self.lm_head = nn.Linear(8, 32, bias=False)


def test_routing_by_name_and_shape():
    groups = muon_param_groups(_MiniDeepseekNames(), lr=LR, weight_decay=WD)
    by_flag = {g["use_muon"]: set(g["param_names"]) for g in groups}
    assert by_flag[True] == {"q_proj.weight", "gate.weight", "experts_down"}
    assert by_flag[False] == {"embed_tokens.weight", "norm.weight", "bias", "lm_head.weight"}
    assert all(g["lr"] == LR and g["weight_decay"] == WD for g in groups)


def test_fused_expert_gate_up_gets_its_own_two_block_muon_group():
    from k2core.model import K2Config, K2ForCausalLM

    groups = muon_param_groups(K2ForCausalLM(K2Config.preset("tiny")), lr=LR, weight_decay=WD)
    assert [(g["use_muon"], g.get("row_blocks")) for g in groups] == [(True, 1), (True, 2), (False, None)]
    assert all(name.endswith("mlp.experts.gate_up_proj") for name in groups[1]["param_names"])
    assert len(groups[1]["param_names"]) == 3


def test_row_blocks_orthogonalise_gate_and_up_as_separate_matrices():
    """[gate; up] fused along rows with row_blocks=2 must move exactly like two unfused parameters."""
    gen = torch.Generator().manual_seed(7)
    fused_init, fused_grad = torch.randn(3, 32, 24, generator=gen), torch.randn(3, 32, 24, generator=gen)
    fused = nn.Parameter(fused_init.clone())
    fused.grad = fused_grad.clone()
    Muon([{"params": [fused], "row_blocks": 2}], lr=LR, weight_decay=WD, ns_dtype=torch.float32).step()
    halves = [nn.Parameter(fused_init[:, rows].clone()) for rows in (slice(0, 16), slice(16, 32))]
    for half, rows in zip(halves, (slice(0, 16), slice(16, 32))):
        half.grad = fused_grad[:, rows].clone()
    Muon(halves, lr=LR, weight_decay=WD, ns_dtype=torch.float32).step()
    torch.testing.assert_close(fused.detach(), torch.cat([h.detach() for h in halves], dim=1), rtol=1e-5, atol=1e-6)


def test_routing_counts_on_the_tiny_k2_model():
    """tiny: 4 layers (1 dense, 3 MoE). Muon: 5 attention matrices per layer, 3 dense-MLP matrices, and per MoE
    layer the router gate, 2 expert stacks and 3 shared-expert matrices = 4*5 + 3 + 3*6 = 41. AdamW: embeddings,
    lm_head, final norm and 4 norms per layer = 19. The router's correction bias is a buffer, never trained."""
    from k2core.model import K2Config, K2ForCausalLM

    model = K2ForCausalLM(K2Config.preset("tiny"))
    groups = {True: [], False: []}
    for g in muon_param_groups(model, lr=LR, weight_decay=WD):
        groups[g["use_muon"]] += g["param_names"]
    assert len(groups[True]) == 41 and len(groups[False]) == 19
    assert sum(name.endswith("mlp.gate.weight") for name in groups[True]) == 3
    assert sum(name.endswith("experts.gate_up_proj") for name in groups[True]) == 3
    assert all(name.endswith("norm.weight") or name in ("lm_head.weight", "model.embed_tokens.weight")
               for name in groups[False])
    assert len(groups[True]) + len(groups[False]) == len(list(model.parameters()))
