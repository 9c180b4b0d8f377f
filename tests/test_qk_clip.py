"""QK-Clip against the K2 formula: per-head gamma = tau / S_max on q^C, k^C (sqrt) and q^R (full); nothing else."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from k2core.model import K2Config, K2ForCausalLM, max_logits
from k2core.model.layers import rope_cos_sin
from k2core.optim import ClipsQK, clip_layers
from k2core.optim.qk_clip import apply_qk_clip

NOPE, ROPE, V, HEADS = 8, 8, 8, 4
REPO = Path(__file__).resolve().parents[1]


def _model(q_lora_rank: int | None = 24, layers: int = 1, seed: int = 0) -> K2ForCausalLM:
    torch.manual_seed(seed)
    config = K2Config.preset("tiny", vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                             num_hidden_layers=layers, first_k_dense_replace=0, num_attention_heads=HEADS,
                             num_key_value_heads=HEADS, n_routed_experts=8, kv_lora_rank=16,
                             q_lora_rank=q_lora_rank, qk_rope_head_dim=ROPE, qk_nope_head_dim=NOPE, v_head_dim=V)
    model = K2ForCausalLM(config).train()
    with torch.no_grad():  # large query weights so logits are O(10) and heads differ
        for layer in model.model.layers:
            attn = layer.self_attn
            attn.query_weight().mul_(torch.linspace(20, 60, HEADS).repeat_interleave(NOPE + ROPE)[:, None])
            attn.kv_b_proj.weight.mul_(5.0)
    return model


def _batch() -> torch.Tensor:
    return torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(5))


def _first_layer_logits(model: K2ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    attn = model.model.layers[0].self_attn
    hidden = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
    cos, sin = rope_cos_sin(torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1), ROPE, 50000.0, hidden.dtype)
    q, k, _, _ = attn.project(hidden, cos, sin, None)
    return (q @ k.transpose(-1, -2)) * attn.scale


def _record(model: K2ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    model(ids)
    return max_logits(model)


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_clip_brings_each_head_to_min_of_smax_and_tau(q_lora_rank):
    model = _model(q_lora_rank)
    ids = _batch()
    s_before = _record(model, ids)[0].clone()
    tau = float(s_before.sort().values[1:3].mean())  # two heads above, two below
    with torch.no_grad():
        logits_before = _first_layer_logits(model, ids)
    stats = apply_qk_clip(model, tau)
    assert stats["num_clipped"] == 2 and stats["clipped_fraction"] == 0.5
    assert stats["global_max_logit"] == pytest.approx(float(s_before.max()))
    assert torch.isinf(max_logits(model)).all()  # reset for the next step
    s_after = _record(model, ids)[0]
    torch.testing.assert_close(s_after, torch.clamp(s_before, max=tau), rtol=1e-5, atol=0)
    gamma = torch.where(s_before > tau, tau / s_before, torch.ones_like(s_before))
    with torch.no_grad():
        logits_after = _first_layer_logits(model, ids)
    torch.testing.assert_close(logits_after, logits_before * gamma[None, :, None, None], rtol=1e-5, atol=1e-5)


def test_only_qc_qr_kc_rows_of_clipped_heads_change():
    model = _model()
    ids = _batch()
    s = _record(model, ids)[0].clone()
    tau = float(s.sort().values[1:3].mean())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_qk_clip(model, tau)
    after = model.state_dict()
    clipped = (s > tau).tolist()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.0.self_attn.q_b_proj.weight", "model.layers.0.self_attn.kv_b_proj.weight"}
    q_old = before["model.layers.0.self_attn.q_b_proj.weight"].view(HEADS, NOPE + ROPE, -1)
    q_new = after["model.layers.0.self_attn.q_b_proj.weight"].view(HEADS, NOPE + ROPE, -1)
    kv_old = before["model.layers.0.self_attn.kv_b_proj.weight"].view(HEADS, NOPE + V, -1)
    kv_new = after["model.layers.0.self_attn.kv_b_proj.weight"].view(HEADS, NOPE + V, -1)
    for h in range(HEADS):
        assert torch.equal(kv_new[h, NOPE:], kv_old[h, NOPE:])  # value rows never touched
        if not clipped[h]:
            assert torch.equal(q_new[h], q_old[h]) and torch.equal(kv_new[h], kv_old[h])
            continue
        g = tau / float(s[h])
        torch.testing.assert_close(q_new[h, :NOPE], q_old[h, :NOPE] * g ** 0.5, rtol=1e-6, atol=0)
        torch.testing.assert_close(q_new[h, NOPE:], q_old[h, NOPE:] * g, rtol=1e-6, atol=0)
        torch.testing.assert_close(kv_new[h, :NOPE], kv_old[h, :NOPE] * g ** 0.5, rtol=1e-6, atol=0)


def test_no_head_above_tau_is_a_bitwise_no_op():
    model = _model(layers=2)
    s = _record(model, _batch())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = apply_qk_clip(model, float(s.max()) + 1.0)
    assert stats["num_clipped"] == 0 and len(stats["max_logit_per_layer"]) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_eval_forward_does_not_touch_smax():
    model = _model()
    s = _record(model, _batch()).clone()
    model.eval()
    with torch.no_grad():
        model(torch.randint(0, 64, (4, 12)))
    model.eval()(torch.randint(0, 64, (4, 12)))  # eval mode with grad enabled is still not a training step
    assert torch.equal(max_logits(model), s)


def test_masked_pairs_are_excluded():
    model = _model()
    ids = _batch()
    with torch.no_grad():
        logits = _first_layer_logits(model, ids)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    causal_max = logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3))
    full_max = logits.amax(dim=(0, 2, 3))
    assert (full_max > causal_max).any()  # this batch has its largest logit in the masked (future) region
    torch.testing.assert_close(_record(model, ids)[0], causal_max, rtol=1e-6, atol=0)
    # padding: keys of the padded sample are masked out as well
    model = _model()
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    model(ids, attention_mask=mask)
    allowed = causal[None] & mask.bool()[:, None, :]
    padded_max = logits.masked_fill(~allowed[:, None], float("-inf")).amax(dim=(0, 2, 3))
    torch.testing.assert_close(max_logits(model)[0], padded_max, rtol=1e-6, atol=0)


def test_hook_lets_a_master_copy_follow_the_clip():
    model = _model()
    s = _record(model, _batch())
    masters = {id(p): p.detach().clone().double() for p in model.parameters()}

    def on_scale(param, row_scale):
        masters[id(param)].mul_(row_scale.double()[:, None])

    apply_qk_clip(model, float(s.min()) * 0.5, on_scale=on_scale)
    for p in model.parameters():
        torch.testing.assert_close(masters[id(p)].float(), p.detach(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_mla_attention_is_itself_a_clips_qk_with_the_k2_row_factors(q_lora_rank):
    model = _model(q_lora_rank, layers=2)
    attns = [layer.self_attn for layer in model.model.layers]
    assert all(isinstance(attn, ClipsQK) for attn in attns)
    assert clip_layers(model) == attns  # the modules themselves, in order: no adapter in between
    gamma = torch.tensor([1.0, 0.25, 0.64, 1.0])
    (q_weight, q_rows), (kv_weight, kv_rows) = attns[0].qk_clip_rows(gamma)
    assert q_weight is attns[0].query_weight() and kv_weight is attns[0].kv_b_proj.weight
    assert q_rows.shape == (q_weight.shape[0],) and kv_rows.shape == (kv_weight.shape[0],)
    root = gamma.sqrt()[:, None]
    q_expected = torch.cat([root.expand(-1, NOPE), gamma[:, None].expand(-1, ROPE)], 1)
    torch.testing.assert_close(q_rows.view(HEADS, -1), q_expected)
    torch.testing.assert_close(kv_rows.view(HEADS, -1), torch.cat([root.expand(-1, NOPE), torch.ones(HEADS, V)], 1))


def test_model_package_does_not_import_the_optimizer_package():
    """k2core.optim depends on k2core.model (tests, trainer), never the reverse: ClipsQK is matched structurally."""
    code = "import sys, k2core.model, k2core.model.attention_variants; print('k2core.optim' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"
