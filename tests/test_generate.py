"""KV-cached sampling: equals uncached greedy decoding, stops at EOS, supports left-padded prompt batches."""

import torch

from k2core.model import K2Config, K2ForCausalLM, generate, generate_batch, max_logits


def _model(seed: int = 0) -> K2ForCausalLM:
    torch.manual_seed(seed)
    config = K2Config.preset("tiny", vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
                             kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
    return K2ForCausalLM(config).eval()


@torch.no_grad()
def _uncached_greedy(model: K2ForCausalLM, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_equals_uncached_greedy():
    model = _model()
    prompt = [1, 5, 9, 33, 2]
    expected = _uncached_greedy(model, prompt, 12)
    out = generate(model, prompt, num_samples=3, max_new_tokens=12, temperature=0.0, eos_token_ids=[])
    assert out == [expected] * 3


def test_stops_after_first_eos_which_is_included():
    model = _model()
    prompt = [3, 4, 5]
    free = _uncached_greedy(model, prompt, 10)
    eos = free[4]
    out = generate(model, prompt, num_samples=2, max_new_tokens=10, temperature=0.0, eos_token_ids={eos})
    cut = free[: free.index(eos) + 1]
    assert out == [cut, cut]


def test_batched_prompts_of_different_lengths_match_single_prompt_runs():
    model = _model(1)
    prompts = [[7], [1, 2, 3, 4, 5, 6], [9, 8, 7]]
    batched = generate_batch(model, prompts, max_new_tokens=8, temperature=0.0, eos_token_ids=[])
    assert batched == [_uncached_greedy(model, p, 8) for p in prompts]
    twice = generate_batch(model, prompts, max_new_tokens=8, temperature=0.0, eos_token_ids=[], num_samples=2)
    assert twice == [c for c in batched for _ in range(2)]


def test_sampling_is_reproducible_with_a_generator_and_top_p_restricts_support():
    model = _model(2)
    runs = [generate(model, [1, 2], 4, 6, temperature=1.0, eos_token_ids=[], top_p=0.9,
                     generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0] == runs[1] and all(len(s) == 6 for s in runs[0])
    tiny_p = generate(model, [1, 2], 3, 5, temperature=1.0, eos_token_ids=[], top_p=1e-6,
                      generator=torch.Generator().manual_seed(0))
    assert tiny_p == [_uncached_greedy(model, [1, 2], 5)] * 3  # only the top token survives


def test_generation_in_train_mode_leaves_smax_and_mode_alone():
    model = _model().train()
    generate(model, [1, 2, 3], 2, 3, temperature=1.0, eos_token_ids=[])
    assert model.training and torch.isinf(max_logits(model)).all()
