"""k2's Llama-family model (Llama, Qwen2, Mistral GQA causal LMs) against transformers' own classes on the same
weights: logits, save/load both ways, S_max, QK-Clip's GQA rule (bitwise), Muon/AdamW split and KV-cached sampling."""

import json

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from k2core.model import generate, generate_batch
from k2core.model.auto import load_causal_lm, model_class
from k2core.model.llama import LlamaFamilyConfig, LlamaFamilyForCausalLM
from k2core.model.modeling import K2ForCausalLM
from k2core.optim import muon_param_groups
from k2core.optim.qk_clip import apply_qk_clip, clip_layers, step_max_logits
from tests.test_generate import _uncached_greedy

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 96, 48, 4, 2, 16
# (transformers config class, extra fields): tied Llama with biases on q, k, v, o; Qwen2 (q, k, v biases); Mistral.
KINDS = {
    "llama": (transformers.LlamaConfig, dict(tie_word_embeddings=True, attention_bias=True)),
    "qwen2": (transformers.Qwen2Config, dict(tie_word_embeddings=False)),
    "mistral": (transformers.MistralConfig, dict(tie_word_embeddings=False, sliding_window=None)),
}


def _hf_model(kind: str, seed: int = 0, layers: int = 2) -> transformers.PreTrainedModel:
    """A tiny random transformers model; every parameter (norms and biases too) drawn at random so each is tested."""
    config_class, extra = KINDS[kind]
    config = config_class(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=80, num_hidden_layers=layers,
                          num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                          max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=5000.0, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn(param.shape) * (0.3 if "norm" not in name else 0.1) + ("norm" in name))
    return model


def _pair(kind: str, tmp_path, seed: int = 0, layers: int = 2
          ) -> tuple[transformers.PreTrainedModel, LlamaFamilyForCausalLM]:
    hf = _hf_model(kind, seed, layers)
    hf.save_pretrained(tmp_path / "hf")
    return hf, load_causal_lm(tmp_path / "hf").eval()


def _left_padded(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, :11] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_transformers_on_its_weights_with_left_padding(kind, tmp_path):
    hf, ours = _pair(kind, tmp_path)
    assert isinstance(ours, LlamaFamilyForCausalLM) and ours.config.model_type == kind
    assert ours.state_dict().keys() == hf.state_dict().keys()
    ids, mask, pos = _left_padded()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=pos).logits
        mine = ours(ids, attention_mask=mask, position_ids=pos).logits
        unpadded = ours(ids[:1]).logits
    real = mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unpadded, theirs[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_folder_loads_in_transformers_with_equal_logits(kind, tmp_path):
    _, ours = _pair(kind, tmp_path)
    with torch.no_grad():
        ours.model.layers[0].self_attn.q_proj.weight.mul_(1.5)  # differs from the folder it was loaded from
    ours.save_pretrained(tmp_path / "k2")
    config = json.loads((tmp_path / "k2" / "config.json").read_text())
    assert config["model_type"] == kind and config["tie_word_embeddings"] == ours.config.tie_word_embeddings
    theirs, info = AutoModelForCausalLM.from_pretrained(tmp_path / "k2", output_loading_info=True,
                                                        attn_implementation="eager")
    assert type(theirs).__name__ == config["architectures"][0]
    assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
    ids, mask, pos = _left_padded(1)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask, position_ids=pos).logits[mask.bool()],
                                   theirs.eval()(ids, attention_mask=mask, position_ids=pos).logits[mask.bool()],
                                   rtol=1e-5, atol=1e-5)
    assert LlamaFamilyConfig.from_hf_dict(config) == ours.config


def test_loader_picks_the_class_from_model_type(tmp_path):
    _pair("qwen2", tmp_path)
    assert model_class(tmp_path / "hf") is LlamaFamilyForCausalLM
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "k2").mkdir()
    (tmp_path / "k2" / "config.json").write_text(json.dumps({**config, "model_type": "deepseek_v3"}))
    assert model_class(tmp_path / "k2") is K2ForCausalLM
    (tmp_path / "k2" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        model_class(tmp_path / "k2")
    for refused in ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
                    {"rope_scaling": {"type": "linear", "factor": 2.0}}, {"hidden_act": "gelu"}, {"mlp_bias": True}):
        with pytest.raises(ValueError, match="not implemented"):
            LlamaFamilyConfig.from_hf_dict({**config, **refused})


def _attention_inputs(model: LlamaFamilyForCausalLM, ids: torch.Tensor) -> list[torch.Tensor]:
    """What each layer's attention saw in the last forward (captured by hooks)."""
    seen: list[torch.Tensor] = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
             for layer in model.model.layers]
    try:
        model(ids, labels=ids).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _layer_logits(model: LlamaFamilyForCausalLM, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Scaled pre-softmax logits [B, H, T, T] of one layer, computed explicitly."""
    from k2core.model.layers import rope_cos_sin

    attn = model.model.layers[layer].self_attn
    cos, sin = rope_cos_sin(torch.arange(x.shape[1])[None].expand(x.shape[0], -1), HEAD_DIM,
                            model.config.rope_theta, x.dtype)
    with torch.no_grad():
        q, k, _, _ = attn.project(x, cos, sin, None)
        return (q @ k.transpose(-1, -2)) * attn.scale


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_smax_of_training_forwards_is_the_max_of_the_explicit_causal_logits(kind, tmp_path):
    _, model = _pair(kind, tmp_path)
    model.train()
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    inputs = _attention_inputs(model, ids)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    for layer, (x, s_max) in enumerate(zip(inputs, step_max_logits(model))):
        logits = _layer_logits(model, layer, x).masked_fill(~causal, float("-inf"))
        torch.testing.assert_close(s_max, logits.amax(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (2, 10)))  # a no-grad forward does not record
    assert torch.equal(torch.cat(step_max_logits(model)), torch.cat([m.max_logit for m in clip_layers(model)]))


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_qk_clip_scales_one_heads_logits_by_gamma_bitwise_and_leaves_its_siblings(kind, tmp_path):
    """Head 3 of layer 0 (sharing its key with head 2) is the only head over tau = S_max / 2, so gamma = 1/2: scaling
    its query rows (and q bias) by a power of two is exact, so its new logits equal half the old ones bitwise."""
    _, model = _pair(kind, tmp_path)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[3 * HEAD_DIM:].mul_(8.0)
        if attn.q_proj.bias is not None:
            attn.q_proj.bias[3 * HEAD_DIM:].mul_(8.0)
    model.train()
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    x = _attention_inputs(model, ids)[0]
    s_max = step_max_logits(model)
    tau = float(s_max[0][3]) / 2
    assert int(torch.cat(s_max).argmax()) == 3 and sorted(torch.cat(s_max).tolist())[-2] < tau
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _layer_logits(model, 0, x)
    stats = apply_qk_clip(model, tau)
    assert stats["num_clipped"] == 1
    after = _layer_logits(model, 0, x)
    assert torch.equal(after[:, 3], before[:, 3] * 0.5)
    assert torch.equal(after[:, :3], before[:, :3])  # head 2 shares head 3's key: untouched
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before_state[k], v)}
    q = "model.layers.0.self_attn.q_proj"
    assert changed == {f"{q}.weight"} | ({f"{q}.bias"} if attn.q_proj.bias is not None else set())


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_muon_gets_hidden_matrices_and_adamw_embeddings_head_norms_and_biases(kind, tmp_path):
    _, model = _pair(kind, tmp_path)
    groups = muon_param_groups(model, lr=1e-3, weight_decay=0.1)
    muon = {n for g in groups if g["use_muon"] for n in g["param_names"]}
    adamw = {n for g in groups if not g["use_muon"] for n in g["param_names"]}
    names = {n for n, _ in model.named_parameters()}
    assert muon | adamw == names and not muon & adamw
    assert muon == {n for n in names if n.endswith("_proj.weight")}
    assert "model.embed_tokens.weight" in adamw and "model.norm.weight" in adamw
    assert ("lm_head.weight" in adamw) != model.config.tie_word_embeddings  # tied: the embedding is the head
    assert {n for n in adamw if n.endswith("bias")} == {n for n in names if n.endswith("bias")} != set()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_cached_greedy_batch_matches_uncached_and_transformers_generate(kind, tmp_path):
    hf, model = _pair(kind, tmp_path)
    prompts = [[7], [1, 2, 3, 4, 5, 6], [9, 8, 7]]
    batched = generate_batch(model, prompts, max_new_tokens=8, temperature=0.0, eos_token_ids=[], pad_token_id=0)
    assert batched == [_uncached_greedy(model, p, 8) for p in prompts]
    ids = torch.tensor([[0] * (6 - len(p)) + p for p in prompts])
    mask = (torch.arange(6)[None] >= torch.tensor([6 - len(p) for p in prompts])[:, None]).long()
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    assert batched == theirs[:, 6:].tolist()


def test_sampling_is_seeded_and_tiny_top_p_is_greedy(tmp_path):
    _, model = _pair("llama", tmp_path)
    runs = [generate(model, [1, 2], 4, 6, temperature=0.8, eos_token_ids=[], top_p=0.9,
                     generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0] == runs[1] and all(len(s) == 6 for s in runs[0]) and len({tuple(s) for s in runs[0]}) > 1
    tiny_p = generate(model, [1, 2], 3, 5, temperature=1.0, eos_token_ids=[], top_p=1e-6,
                      generator=torch.Generator().manual_seed(0))
    assert tiny_p == [_uncached_greedy(model, [1, 2], 5)] * 3
