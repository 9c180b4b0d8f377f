"""Our K2ForCausalLM and transformers' DeepseekV3ForCausalLM load each other's checkpoints with equal logits."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

from k2core.model import K2Config, K2ForCausalLM


def _config(**overrides) -> K2Config:
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2,
                kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
                n_group=2, topk_group=1)
    return K2Config.preset("tiny", **{**base, **overrides})


def _hf_model(config: K2Config) -> DeepseekV3ForCausalLM:
    hf_config = DeepseekV3Config(**config.to_hf_dict())
    hf_config._attn_implementation = "eager"
    return DeepseekV3ForCausalLM(hf_config).eval()


def _batches(vocab: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, 11), generator=g) for _ in range(3)]


def _randomise_router_bias(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.05)


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_parameter_names_and_shapes_match_transformers(q_lora_rank):
    config = _config(q_lora_rank=q_lora_rank)
    ours = {k: tuple(v.shape) for k, v in K2ForCausalLM(config).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in _hf_model(config).state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_transformers_loads_our_checkpoint_with_equal_logits(tmp_path, q_lora_rank):
    torch.manual_seed(0)
    config = _config(q_lora_rank=q_lora_rank)
    ours = K2ForCausalLM(config).eval()
    _randomise_router_bias(ours, 1)
    ours.save_pretrained(tmp_path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(theirs).__name__ == "DeepseekV3ForCausalLM"
    with torch.no_grad():
        for ids in _batches(config.vocab_size):
            diff = (ours(ids).logits - theirs(ids).logits).abs().max()
            assert diff < 1e-4


def test_we_load_a_transformers_checkpoint_with_equal_logits(tmp_path):
    torch.manual_seed(1)
    config = _config()
    theirs = _hf_model(config)
    _randomise_router_bias(theirs, 2)
    theirs.save_pretrained(tmp_path)
    ours = K2ForCausalLM.from_pretrained(tmp_path).eval()
    assert ours.config == config
    with torch.no_grad():
        for ids in _batches(config.vocab_size, seed=3):
            labels = ids.clone()
            labels[:, :3] = -100
            a, b = ours(ids, labels=labels), theirs(ids, labels=labels)
            assert (a.logits - b.logits).abs().max() < 1e-4
            assert torch.allclose(a.loss, b.loss, atol=1e-5)


def test_our_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(2)
    model = K2ForCausalLM(_config(tie_word_embeddings=True))
    _randomise_router_bias(model, 4)
    model.save_pretrained(tmp_path)
    loaded = K2ForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_transformers_config_without_our_training_fields_takes_their_defaults(tmp_path):
    config = _config()
    _hf_model(config).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.pop("router_bias_update_speed")
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert K2ForCausalLM.from_pretrained(tmp_path).config.router_bias_update_speed == 0.001
    loaded = K2ForCausalLM.from_pretrained(tmp_path, router_bias_update_speed=0.01)
    assert loaded.config.router_bias_update_speed == 0.01
