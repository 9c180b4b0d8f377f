"""K2Config takes transformers' DeepseekV3Config defaults, so a config written for transformers loads as it is."""

import json

import torch
from transformers import AutoConfig, DeepseekV3Config, DeepseekV3ForCausalLM

from k2core.model import K2ForCausalLM
from k2core.model.config import K2Config

K2_ONLY = {"router_bias_update_speed"}  # training knob transformers does not have


def test_defaults_are_deepseek_v3_configs():
    ours, theirs = K2Config(), DeepseekV3Config()
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    for name in set(K2Config.model_fields) - K2_ONLY - {"rope_theta", "rope_scaling"}:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_a_transformers_config_with_only_some_fields_loads_as_transformers_reads_it(tmp_path):
    """A config.json written by transformers for a small DeepSeek-V3 (its other fields at their defaults) loads
    into K2ForCausalLM with exactly the weights and logits of transformers' own model."""
    given = dict(vocab_size=96, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=2, n_routed_experts=8, kv_lora_rank=16, q_lora_rank=None,
                 qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, n_group=2, topk_group=1,
                 num_experts_per_tok=2, first_k_dense_replace=1)
    torch.manual_seed(0)
    reference = DeepseekV3ForCausalLM(DeepseekV3Config(**given)).eval()
    reference.save_pretrained(tmp_path)
    # the config.json a user writes by hand for transformers: only what differs from DeepseekV3Config
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deepseek_v3", **given}))
    read = {k: v for k, v in AutoConfig.from_pretrained(tmp_path).to_dict().items() if k != "_name_or_path"}
    assert read == {k: v for k, v in DeepseekV3Config(**given).to_dict().items() if k != "_name_or_path"}
    model = K2ForCausalLM.from_pretrained(tmp_path).eval()
    config = model.config
    assert config == K2Config.from_hf_dict(json.loads((tmp_path / "config.json").read_text()))
    assert config.routed_scaling_factor == 2.5 and config.rope_theta == 10000.0  # defaults, not written by us
    assert config.router_bias_update_speed == 0.001 and config.n_shared_experts == 1
    ids = torch.randint(0, given["vocab_size"], (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)


def test_presets_keep_their_architecture():
    tiny = K2Config.preset("tiny")
    assert (tiny.num_nextn_predict_layers, tiny.bos_token_id, tiny.eos_token_id) == (0, None, None)
    assert (tiny.routed_scaling_factor, tiny.n_group, tiny.rope_theta) == (2.827, 1, 50000.0)
    assert K2Config.preset("kimi-k2").num_nextn_predict_layers == 1
