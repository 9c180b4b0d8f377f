"""QK-Clip on MHA, GQA and MQA, and the S_max semantics every layout shares (micro-batches, recompute, eval, reset)."""

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from k2core.model import K2Config, K2ForCausalLM, max_logits
from k2core.model.attention_variants import GQAttention, MHAttention
from k2core.model.layers import rope_cos_sin
from k2core.optim.qk_clip import apply_qk_clip, clip_layers, reset_clip_maxima, step_max_logits
from tests.test_model import OutputShapes

HIDDEN, HEADS, DIM, SEQ = 32, 4, 8, 10
LAYOUTS = {"mha": HEADS, "gqa": 2, "mqa": 1}


def _attention(layout: str, seed: int = 0) -> GQAttention:
    torch.manual_seed(seed)
    attn = MHAttention(HIDDEN, HEADS, DIM) if layout == "mha" else GQAttention(HIDDEN, HEADS, LAYOUTS[layout], DIM)
    with torch.no_grad():  # logits of O(10) that differ per head
        attn.q_proj.weight.mul_(torch.linspace(10, 40, HEADS).repeat_interleave(DIM)[:, None])
        attn.k_proj.weight.mul_(5.0)
    return attn.train()


def _inputs(batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, ...]:
    x = torch.randn(batch, SEQ, HIDDEN, generator=torch.Generator().manual_seed(seed))
    cos, sin = rope_cos_sin(torch.arange(SEQ)[None].expand(batch, -1), DIM, 10000.0, x.dtype)
    allowed = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()[None, None]
    return x, cos, sin, allowed


def _record(attn: GQAttention, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    attn(*inputs)[0].sum().backward()
    return attn.max_logit.clone()


def _logits(attn: GQAttention, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, cos, sin, _ = inputs
    with torch.no_grad():
        q, k, _, _ = attn.project(x, cos, sin, None)
        return (q @ k.transpose(-1, -2)) * attn.scale


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clip_gives_min_of_smax_and_tau_and_scales_each_heads_logits_by_gamma(layout):
    attn, inputs = _attention(layout), _inputs()
    s = _record(attn, inputs)
    tau = float(s.sort().values[1:3].mean())  # two heads above tau, two below
    before = _logits(attn, inputs)
    stats = apply_qk_clip(attn, tau)
    assert stats["num_clipped"] == 2 and stats["clipped_fraction"] == 0.5
    assert stats["global_max_logit"] == pytest.approx(float(s.max()))
    assert torch.isinf(attn.max_logit).all()  # reset for the next step
    torch.testing.assert_close(_record(attn, inputs), s.clamp(max=tau), rtol=1e-5, atol=0)
    gamma = torch.where(s > tau, tau / s, torch.ones_like(s))
    scale = float(before.abs().max())  # products of O(10) entries: fp32 rounding is relative to the largest logit
    torch.testing.assert_close(_logits(attn, inputs), before * gamma[None, :, None, None], rtol=1e-5,
                               atol=1e-6 * scale)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_rows_of_clipped_heads_change_and_shared_keys_stay(layout):
    attn, inputs = _attention(layout), _inputs()
    s = _record(attn, inputs)
    tau = float(s.sort().values[1:3].mean())
    before = {k: v.clone() for k, v in attn.state_dict().items()}
    apply_qk_clip(attn, tau)
    after = attn.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == ({"q_proj.weight", "k_proj.weight"} if layout == "mha" else {"q_proj.weight"})
    gamma = tau / s
    q_old, q_new = before["q_proj.weight"].view(HEADS, DIM, -1), after["q_proj.weight"].view(HEADS, DIM, -1)
    k_old, k_new = before["k_proj.weight"].view(-1, DIM, HIDDEN), after["k_proj.weight"].view(-1, DIM, HIDDEN)
    for h in range(HEADS):
        if s[h] <= tau:
            assert torch.equal(q_new[h], q_old[h]) and (layout != "mha" or torch.equal(k_new[h], k_old[h]))
            continue
        q_factor = gamma[h].sqrt() if layout == "mha" else gamma[h]
        torch.testing.assert_close(q_new[h], q_old[h] * q_factor, rtol=1e-6, atol=0)
        if layout == "mha":
            torch.testing.assert_close(k_new[h], k_old[h] * gamma[h].sqrt(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_head_under_tau_is_a_bitwise_no_op(layout):
    attn = _attention(layout)
    s = _record(attn, _inputs())
    before = {k: v.clone() for k, v in attn.state_dict().items()}
    assert apply_qk_clip(attn, float(s.max()) + 1.0)["num_clipped"] == 0
    assert all(torch.equal(before[k], v) for k, v in attn.state_dict().items())


def test_gqa_siblings_of_a_clipped_head_keep_their_logits():
    """The query-only rule: in a group sharing one key, clipping head 3 leaves head 2's logits bitwise equal."""
    attn, inputs = _attention("gqa"), _inputs()
    s = _record(attn, inputs)
    assert int(s.argmax()) == 3 and s[2] < s[3]
    before = _logits(attn, inputs)
    apply_qk_clip(attn, float(s[2] + s[3]) / 2)
    after = _logits(attn, inputs)
    assert torch.equal(after[:, :3], before[:, :3])
    assert (after[:, 3].abs() < before[:, 3].abs()).any()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_smax_is_the_max_over_micro_batches_and_ignores_eval_forwards(layout):
    attn, full = _attention(layout), _inputs(batch=4)
    whole = _record(attn, full)
    reset_clip_maxima(attn)
    for rows in (slice(0, 1), slice(1, 4)):  # two micro-batches of one step
        _record(attn, (full[0][rows], full[1][rows], full[2][rows], full[3]))
    torch.testing.assert_close(attn.max_logit, whole, rtol=1e-6, atol=0)
    with torch.no_grad():
        attn(*_inputs(seed=7))
    attn.eval()(*_inputs(seed=8))
    torch.testing.assert_close(attn.max_logit, whole, rtol=1e-6, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activation_recomputation_does_not_change_smax(layout):
    plain, inputs = _attention(layout), _inputs()
    expected = _record(plain, inputs)
    recomputed = _attention(layout)
    out, _ = checkpoint(recomputed, *inputs, use_reentrant=False)
    out.sum().backward()  # the backward reruns the forward (grad enabled, training mode)
    assert torch.equal(recomputed.max_logit, expected)
    torch.testing.assert_close(recomputed.q_proj.weight.grad, plain.q_proj.weight.grad)


def _k2(layers: int = 2) -> K2ForCausalLM:
    torch.manual_seed(0)
    config = K2Config.preset("tiny", vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, moe_intermediate_size=16,
                             num_hidden_layers=layers, first_k_dense_replace=0, num_attention_heads=HEADS,
                             num_key_value_heads=HEADS, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16,
                             q_lora_rank=None, qk_rope_head_dim=DIM, qk_nope_head_dim=DIM, v_head_dim=DIM)
    return K2ForCausalLM(config).train()


def test_mla_model_smax_survives_activation_checkpointing():
    ids = torch.randint(0, 64, (2, SEQ), generator=torch.Generator().manual_seed(3))
    model = _k2()
    model(ids, labels=ids).loss.backward()
    expected = max_logits(model).clone()
    model = _k2()
    for layer in model.model.layers:
        layer.forward = (lambda fwd: lambda *args: checkpoint(fwd, *args, use_reentrant=False))(layer.forward)
    model(ids, labels=ids).loss.backward()
    assert torch.equal(max_logits(model), expected)


def test_one_clip_call_covers_mixed_layouts_in_a_model():
    """A K2 model whose second layer is swapped for GQA: layers are found through the module, not by name."""
    model = _k2()
    model.model.layers[1].self_attn = GQAttention(HIDDEN, HEADS, 2, DIM)  # rope dim = head dim, as K2Model passes
    ids = torch.randint(0, 64, (2, SEQ), generator=torch.Generator().manual_seed(3))
    model(ids, labels=ids).loss.backward()
    assert [type(layer).__name__ for layer in clip_layers(model)] == ["MLAttention", "GQAttention"]
    s = step_max_logits(model)
    tau = float(torch.cat(s).min()) / 2  # every head of both layers clips
    gqa = model.model.layers[1].self_attn
    q_before, k_before = gqa.q_proj.weight.clone(), gqa.k_proj.weight.clone()
    stats = apply_qk_clip(model, tau)
    assert stats["num_clipped"] == 2 * HEADS and len(stats["max_logit_per_layer"]) == 2
    assert torch.equal(gqa.k_proj.weight, k_before)
    torch.testing.assert_close(gqa.q_proj.weight, q_before * (tau / s[1]).repeat_interleave(DIM)[:, None])
    model(ids, labels=ids)  # layer 0 sees the same input, so its heads now peak at tau (layer 1's input moved)
    torch.testing.assert_close(step_max_logits(model)[0], torch.full((HEADS,), tau), rtol=1e-4, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padded", [False, True])
def test_training_output_and_smax_equal_the_materialised_logits(layout, padded):
    attn = _attention(layout)
    x, cos, sin, allowed = _inputs()
    if padded:
        keep = torch.ones(3, SEQ, dtype=torch.bool)
        keep[0, 6:] = False
        allowed = allowed & keep[:, None, None, :]
    out, _ = attn(x, cos, sin, allowed)
    logits = _logits(attn, (x, cos, sin, allowed))
    with torch.no_grad():
        v = attn.project(x, cos, sin, None)[2]
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        expected = attn.o_proj((probs @ v).transpose(1, 2).reshape(3, SEQ, -1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn.max_logit, logits.masked_fill(~allowed, float("-inf")).amax(dim=(0, 2, 3)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_forward_and_backward_build_no_seq_by_seq_logits(layout):
    attn, inputs = _attention(layout), _inputs()
    with OutputShapes() as shapes:
        attn(*inputs)[0].sum().backward()
    assert {dtype for shape, dtype in shapes.seen if shape[-2:] == (SEQ, SEQ)} <= {torch.bool}
    assert torch.isfinite(attn.max_logit).all()
