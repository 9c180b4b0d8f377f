"""Analytic parameter counts match instantiated models and the published K2 size."""

import pytest

from k2core.model import K2Config, K2ForCausalLM, count_parameters, format_plan


@pytest.mark.parametrize("overrides", [{}, {"q_lora_rank": None}, {"tie_word_embeddings": True},
                                       {"attention_bias": True, "first_k_dense_replace": 0}])
def test_tiny_count_equals_instantiated_numel(overrides):
    config = K2Config.preset("tiny", **overrides)
    model = K2ForCausalLM(config)
    assert count_parameters(config)["total"] == sum(p.numel() for p in model.parameters())


def test_tiny_is_small_enough_for_cpu():
    assert count_parameters(K2Config.preset("tiny"))["total"] < 5_000_000


def test_kimi_k2_matches_published_size():
    counts = count_parameters(K2Config.preset("kimi-k2"))
    # Exact count of the published architecture (61 layers, no MTP module).
    assert counts["total"] == 1_026_408_209_408
    assert counts["activated"] == 32_861_477_888
    # Report: 32.6B activated, 1.04T total. The main model is 1.3% below 1.04T (the gap is close to one extra MoE
    # layer, i.e. the count likely includes a multi-token-prediction layer), so total gets a 1.5% band.
    assert counts["activated"] == pytest.approx(32.6e9, rel=0.01)
    assert counts["total"] == pytest.approx(1.04e12, rel=0.015)


def test_format_plan_lists_totals():
    text = format_plan(K2Config.preset("kimi-k2"))
    assert "1,026,408,209,408" in text and "activated / token" in text and "32.86B" in text
