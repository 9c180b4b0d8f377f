"""K2ForCausalLM behaviour: loss, masks, routing, aux-loss-free bias, S_max recording, config validation."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from k2core.model import K2Config, K2ForCausalLM, max_logits, reset_max_logits, update_router_bias
from k2core.model.attention import MLAttention
from k2core.model.layers import rope_cos_sin
from k2core.model.moe import MoE, TopKRouter


def _config(**overrides) -> K2Config:
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2,
                kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
    return K2Config.preset("tiny", **{**base, **overrides})


def test_presets_and_validation():
    assert K2Config.preset("kimi-k2").n_routed_experts == 384
    with pytest.raises(ValueError, match="unknown model preset"):
        K2Config.preset("huge")
    with pytest.raises(ValueError, match="num_key_value_heads"):
        _config(num_key_value_heads=2)
    with pytest.raises(ValueError, match="extra"):
        _config(not_a_field=1)


def test_loss_is_mean_shifted_cross_entropy_ignoring_minus_100():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config())
    ids = torch.randint(0, 64, (2, 9))
    labels = ids.clone()
    labels[0, 4:] = -100
    out = model(ids, labels=labels)
    logits, targets = out.logits[:, :-1], labels[:, 1:]
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_left_padding_with_mask_and_positions_matches_unpadded():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config()).eval()
    ids = torch.randint(0, 64, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(ids).logits
        with_pad = model(padded, attention_mask=mask, position_ids=positions).logits[:, 3:]
    assert (plain - with_pad).abs().max() < 1e-5


def test_training_and_eval_paths_agree():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config())
    ids = torch.randint(0, 64, (2, 10))
    train_logits = model.train()(ids).logits
    with torch.no_grad():
        eval_logits = model.eval()(ids).logits
    assert (train_logits - eval_logits).abs().max() < 1e-5


def test_fused_experts_equal_a_per_token_reference():
    torch.manual_seed(0)
    config = _config(n_group=4, topk_group=2)
    moe = next(m for m in K2ForCausalLM(config).modules() if isinstance(m, MoE))
    x = torch.randn(13, config.hidden_size)
    index, weights = moe.gate(x)
    expected = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(index.shape[1]):
            e = int(index[t, slot])
            gate, up = (moe.experts.gate_up_proj[e] @ x[t]).chunk(2)
            expected[t] += weights[t, slot] * (moe.experts.down_proj[e] @ (F.silu(gate) * up))
    assert torch.allclose(moe.experts(x, index, weights), expected, atol=1e-6)


def test_group_limited_routing_and_bias_affects_selection_only():
    torch.manual_seed(0)
    config = _config(n_routed_experts=8, n_group=4, topk_group=1, num_experts_per_tok=2)
    router = next(m for m in K2ForCausalLM(config).modules() if isinstance(m, TopKRouter))
    x = torch.randn(50, config.hidden_size)
    index, weights = router(x)
    assert ((index // 2) == (index[:, :1] // 2)).all()  # both experts from one group of 2
    assert torch.allclose(weights.sum(-1), torch.full((50,), config.routed_scaling_factor))
    router.e_score_correction_bias[5] = 10.0
    index_b, weights_b = router(x)
    assert (index_b == 5).any(dim=1).all()
    scores = (x @ router.weight.T).sigmoid()
    picked = scores.gather(1, index_b)
    expected = picked / picked.sum(-1, keepdim=True) * config.routed_scaling_factor
    assert torch.allclose(weights_b, expected, atol=1e-6)


def test_router_bias_update_is_sign_of_load_imbalance_and_not_trained():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config(num_hidden_layers=2, first_k_dense_replace=1))
    router = next(m for m in model.modules() if isinstance(m, TopKRouter))
    assert all("e_score_correction_bias" not in n for n, _ in model.named_parameters())
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        model.eval()(ids)
    assert router.expert_load.sum() == 0  # eval forwards do not count
    model.train()(ids).logits.sum().backward()
    load = router.expert_load.float()
    assert load.sum() == 2 * 12 * 2
    before = router.e_score_correction_bias.clone()
    stats = update_router_bias(model)
    step = router.e_score_correction_bias - before
    expected = 0.001 * torch.sign(load.mean() - load)
    assert torch.allclose(step, expected)
    assert stats["layers_updated"] == 1 and stats["max_overload"] == pytest.approx(float(load.max() / load.mean() - 1))
    assert router.expert_load.sum() == 0


def _reference_smax(attn: MLAttention, hidden: torch.Tensor, rope_dim: int, theta: float) -> torch.Tensor:
    seq = hidden.shape[1]
    cos, sin = rope_cos_sin(torch.arange(seq)[None].expand(hidden.shape[0], -1), rope_dim, theta, hidden.dtype)
    q, k, _, _ = attn.project(hidden, cos, sin, None)
    logits = (q @ k.transpose(-1, -2)) * attn.scale
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    return logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3))


def test_smax_is_recorded_in_training_forwards_only_as_a_running_max():
    torch.manual_seed(0)
    config = _config(num_hidden_layers=1, first_k_dense_replace=1)
    model = K2ForCausalLM(config)
    attn = model.model.layers[0].self_attn
    assert torch.isinf(max_logits(model)).all()
    ids = torch.randint(0, 64, (3, 8))
    with torch.no_grad():
        model.train()(ids)  # no-grad forward (e.g. rollouts) is not a training step
        model.eval()(ids)
    assert torch.isinf(max_logits(model)).all()
    model.train()(ids)
    hidden = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
    with torch.no_grad():
        expected = _reference_smax(attn, hidden, config.qk_rope_head_dim, config.rope_theta)
    assert torch.allclose(max_logits(model)[0], expected, rtol=1e-6)
    model.train()(ids[:1, :2])  # a smaller batch cannot lower the running max
    assert torch.allclose(max_logits(model)[0], expected, rtol=1e-6)
    reset_max_logits(model)
    assert torch.isinf(max_logits(model)).all()


def test_bf16_training_step_runs():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config()).to(torch.bfloat16)
    ids = torch.randint(0, 64, (2, 8))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.dtype == torch.bfloat16
    router = next(m for m in model.modules() if isinstance(m, TopKRouter))
    assert router.e_score_correction_bias.dtype == torch.float32  # 1e-3 steps would vanish in bf16
    assert max_logits(model).dtype == torch.float32 and torch.isfinite(max_logits(model)).all()
    assert router.expert_load.sum() == 2 * 8 * model.config.num_experts_per_tok


class OutputShapes(TorchDispatchMode):
    """Records (shape, dtype) of every tensor an aten op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen += [(tuple(t.shape), t.dtype) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out


def _materialised_attention(attn: MLAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The attention as the model computed it before SDPA: explicit logits, masked softmax in fp32, then V."""
    batch, seq, _ = x.shape
    cos, sin = rope_cos_sin(torch.arange(seq)[None].expand(batch, -1), attn.rope_dim, 10000.0, x.dtype)
    q, k, v, _ = attn.project(x, cos, sin, None)
    logits = (q @ k.transpose(-1, -2) * attn.scale).masked_fill(~allowed, torch.finfo(q.dtype).min)
    out = F.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype) @ v
    return attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


@pytest.mark.parametrize("padded", [False, True])
def test_training_attention_equals_materialised_softmax_and_records_smax(padded):
    torch.manual_seed(0)
    attn = MLAttention(_config()).train()
    x = torch.randn(3, 11, 32)
    allowed = torch.ones(11, 11, dtype=torch.bool).tril()[None, None]
    if padded:  # right padding (RL/PTX batches) in row 0, left padding (batched prompts) in row 1
        keep = torch.ones(3, 11, dtype=torch.bool)
        keep[0, 7:] = False
        keep[1, :3] = False
        allowed = allowed & keep[:, None, None, :]
        x = torch.where(keep[..., None], x, 30 * x)  # padded keys carry a large k^R: their logits would dominate
    cos, sin = rope_cos_sin(torch.arange(11)[None].expand(3, -1), attn.rope_dim, 10000.0, x.dtype)
    out, _ = attn(x, cos, sin, allowed)
    expected = _materialised_attention(attn, x, allowed)
    # a query that sees no key (left padding) has an arbitrary output either way; only real queries are compared
    real = allowed.any(dim=-1)[:, 0].expand(3, -1)
    torch.testing.assert_close(out[real], expected[real], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        q, k, _, _ = attn.project(x, cos, sin, None)
        logits = q @ k.transpose(-1, -2) * attn.scale
    expected_max = logits.masked_fill(~allowed, float("-inf")).amax(dim=(0, 2, 3))
    torch.testing.assert_close(attn.max_logit, expected_max, rtol=1e-6, atol=1e-6)
    if padded:
        causal = torch.ones(11, 11, dtype=torch.bool).tril()
        assert (logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3)) > expected_max).all()


def test_training_step_builds_no_seq_by_seq_logits():
    """Forward and backward of a training step: the only [T, T] tensors are the boolean causal mask's."""
    torch.manual_seed(0)
    model = K2ForCausalLM(_config(num_hidden_layers=1, first_k_dense_replace=1)).train()
    ids = torch.randint(0, 64, (2, 37))
    with OutputShapes() as shapes:
        model(ids, labels=ids).loss.backward()
    square = {dtype for shape, dtype in shapes.seen if shape[-2:] == (37, 37)}
    assert square == {torch.bool}
    assert torch.isfinite(max_logits(model)).all()


def test_a_recording_forward_cannot_continue_a_kv_cache():
    torch.manual_seed(0)
    model = K2ForCausalLM(_config()).train()
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        cache = model(ids[:, :4], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="whole sequences"):
        model(ids[:, 4:], attention_mask=torch.ones(1, 6), past_key_values=cache)


def test_the_model_reads_the_key_padding_once_per_forward(monkeypatch):
    """One device read of the padding per forward, not one per layer; none without an attention mask."""
    import k2core.model.layers as layers

    calls = []
    original = layers.key_padding
    monkeypatch.setattr(layers, "key_padding", lambda allowed: calls.append(1) or original(allowed))
    config = _config(num_hidden_layers=3)
    model = K2ForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, -3:] = 0
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    assert len(calls) == 1
    model(ids, labels=ids)
    assert len(calls) == 1


def test_padding_is_routed_but_not_counted_in_the_balancing_load():
    """Right-padded SFT rows pass `token_mask`, RL rows their `attention_mask`: only real tokens count in each
    router's expert_load, which drives the aux-loss-free bias update."""
    config = _config(first_k_dense_replace=0)
    model = K2ForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (2, 9))
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 5:] = False
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    for kwargs in ({"token_mask": real}, {"attention_mask": real.long()}):
        for router in routers:
            router.expert_load.zero_()
        model(ids, labels=ids, **kwargs).loss.backward()
        assert all(int(r.expert_load.sum()) == int(real.sum()) * config.num_experts_per_tok for r in routers)
    for router in routers:
        router.expert_load.zero_()
    model(ids, labels=ids).loss.backward()  # no mask: every position counts
    assert all(int(r.expert_load.sum()) == ids.numel() * config.num_experts_per_tok for r in routers)


def test_grouped_expert_gemm_equals_the_per_expert_loop(monkeypatch):
    import k2core.model.moe as moe_module

    torch.manual_seed(0)
    config = _config(n_routed_experts=8, num_experts_per_tok=2)
    moe = next(m for m in K2ForCausalLM(config).modules() if isinstance(m, MoE))
    x = torch.randn(5, config.hidden_size)  # 10 routed rows over 8 experts: some experts get none
    with torch.no_grad():
        index, weights = moe.gate(x)

    def run() -> tuple[torch.Tensor, ...]:
        inputs = x.clone().requires_grad_()
        moe.experts.zero_grad()
        out = moe.experts(inputs, index, weights)
        out.pow(2).sum().backward()
        return out, inputs.grad, moe.experts.gate_up_proj.grad, moe.experts.down_proj.grad

    grouped = run()
    monkeypatch.setattr(moe_module, "_grouped_mm_serves", lambda device, dtype: False)
    looped = run()
    assert torch.bincount(index.flatten(), minlength=8).min() == 0
    for a, b in zip(grouped, looped, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
