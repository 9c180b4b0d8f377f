"""The RL loop: it learns a trivially learnable task, and `rl()` runs end to end on tiny inputs."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from k2core.chat import BOS, EOS, PAD, SPECIAL_TOKENS
from k2core.model import K2Config, K2ForCausalLM
from k2core.rl.batch import pack_rollouts
from k2core.rl.trainer import RLConfig, policy_update, rl, sample_responses
from k2core.tracking import InMemoryTracker

TINY_SHAPES = dict(
    hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=16,
    qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=512,
)
TEXTS = [
    "What is 2 + 3? Add the numbers: 2 + 3 = 5, so the answer is \\boxed{5}.",
    "What is 7 - 4? Subtract: 7 - 4 = 3, so the answer is \\boxed{3}.",
    "Numbers, sums and differences are the assistant's daily work for the user.",
]


def tiny_model(vocab_size: int, seed: int = 0) -> K2ForCausalLM:
    torch.manual_seed(seed)
    return K2ForCausalLM(K2Config.preset("tiny", vocab_size=vocab_size, **TINY_SHAPES))


def build_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """A ~300-token byte-level BPE with k2's special tokens, saved as an HF folder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 2, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.save_pretrained(str(directory))
    return fast


def write_pipeline_inputs(root: Path) -> dict[str, Path]:
    """Tokenizer, an 'SFT' checkpoint (random tiny model) and math/sft parquets per docs/contracts.md."""
    tokenizer = build_tokenizer(root / "tokenizer")
    tiny_model(len(tokenizer)).save_pretrained(root / "sft" / "hf")
    rows = []
    for i, (a, b) in enumerate([(2, 3), (4, 1), (6, 2), (1, 1), (3, 5), (2, 2)]):
        rows.append(dict(problem_id=f"p{i}", generator="arith", question=f"What is {a} + {b}?", answer=str(a + b),
                         note=f"Add: {a} + {b} = {a + b}. \\boxed{{{a + b}}}", split=["rl", "test"][i % 2]))
    pd.DataFrame(rows).to_parquet(root / "math.parquet")
    sft = [dict(example_id=f"s{i}", source="math", tools="[]",
                messages=json.dumps([{"role": "user", "content": r["question"]},
                                     {"role": "assistant", "content": r["note"]}])) for i, r in enumerate(rows)]
    pd.DataFrame(sft).to_parquet(root / "sft.parquet")
    return {"tokenizer": root / "tokenizer", "init": root / "sft" / "hf", "math": root / "math.parquet",
            "sft": root / "sft.parquet"}


def rl_config(**overrides: object) -> RLConfig:
    values = dict(
        seed=0, iterations=2, prompts_per_iteration=2, samples_per_prompt=2, rollout_batch_size=4,
        inner_steps=2, micro_batch_size=2, lr=0.02, weight_decay=0.0, tau=0.1,
        temperature={"start": 1.0, "end": 0.7, "shape": "linear"}, token_budgets={"math": 6},
        overlong_penalty=-0.5, ptx_coef=0.1, ptx_batch_size=2, ptx_max_len=96, qk_clip_tau=100.0,
        reward_timeout_s=20.0,
    )
    values.update(overrides)
    return RLConfig(**values)


def test_rl_loop_learns_a_two_token_task() -> None:
    """Reward = share of token 1 in a 6-token response (token 3 ends it early); random init gets ~0.18."""
    model = tiny_model(vocab_size=4)
    prompts, eos, length = [[0], [0, 2]], [3], 6

    def reward(response: list[int]) -> float:
        return sum(token == 1 for token in response) / length

    def expected_reward() -> float:
        (samples,) = sample_responses(model, [[0]], 64, length, 1.0, eos, torch.Generator().manual_seed(123), 0, 64)
        return sum(map(reward, samples)) / len(samples)

    before = expected_reward()
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        responses = sample_responses(model, prompts, 8, length, 1.0, eos, generator, pad_id=0, batch_size=16)
        rewards = [[reward(r) for r in group] for group in responses]
        batch = pack_rollouts(prompts, responses, rewards, pad_id=0)
        policy_update(model, batch, tau=0.1, inner_steps=4, lr=0.02, weight_decay=0.0, micro_batch_size=16,
                      qk_clip_tau=100.0)
    after = expected_reward()
    assert before < 0.3
    assert after > before + 0.4


def test_rl_runs_end_to_end_and_writes_a_checkpoint(tmp_path: Path) -> None:
    paths = write_pipeline_inputs(tmp_path)
    tracker = InMemoryTracker()
    cfg = rl_config()
    result = rl(cfg, paths["init"], paths["math"], paths["sft"], paths["tokenizer"], tmp_path / "out", tracker)

    hf = Path(result["hf_dir"])
    assert (hf / "config.json").exists() and (hf / "model.safetensors").exists() and (hf / "tokenizer.json").exists()
    reloaded = K2ForCausalLM.from_pretrained(hf)
    start = K2ForCausalLM.from_pretrained(paths["init"])
    assert any(not torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), start.state_dict().values()))

    temps = [v for _, v in tracker.metrics["rl/temperature"]]
    assert temps == pytest.approx([1.0, 0.7])
    for key in ("reward_mean", "accuracy", "response_len", "clip_rate", "loss", "ptx_loss", "rl_loss"):
        assert len(tracker.metrics[f"rl/{key}"]) == cfg.iterations
    assert tracker.last("rl/ptx_loss") > 0
    final = result["final"]
    assert 0 < final["response_len"] <= 6
    # Clipped responses earn exactly the penalty, the others a score in [0, 1].
    clip = final["clip_rate"]
    assert -0.5 * clip <= final["reward_mean"] <= -0.5 * clip + (1 - clip)
    assert tracker.params["rl.tau"] == 0.1


def test_rl_requires_rl_prompts_and_a_math_budget(tmp_path: Path) -> None:
    paths = write_pipeline_inputs(tmp_path)
    with pytest.raises(KeyError, match="rl.token_budgets"):
        rl(rl_config(token_budgets={"code": 8}), paths["init"], paths["math"], paths["sft"], paths["tokenizer"],
           tmp_path / "out", InMemoryTracker())
    frame = pd.read_parquet(paths["math"])
    frame.assign(split="test").to_parquet(paths["math"])
    with pytest.raises(ValueError, match="split 'rl'"):
        rl(rl_config(), paths["init"], paths["math"], paths["sft"], paths["tokenizer"], tmp_path / "out",
           InMemoryTracker())
    with pytest.raises(ValueError, match="extra"):
        rl_config(kl_coef=0.1)


def test_micro_batching_does_not_change_the_update() -> None:
    prompts = [[0, 1], [0, 2, 2]]
    responses = [[[1, 2, 1], [3]], [[2, 2], [1, 1, 1, 3]]]
    batch = pack_rollouts(prompts, responses, [[1.0, 0.0], [0.25, 0.75]], pad_id=0)
    updated = []
    for micro in (4, 1):
        model = tiny_model(vocab_size=4, seed=3)
        policy_update(model, batch, tau=0.3, inner_steps=2, lr=0.01, weight_decay=0.1, micro_batch_size=micro,
                      qk_clip_tau=100.0)
        updated.append(model.state_dict())
    start = tiny_model(vocab_size=4, seed=3).state_dict()
    assert any(not torch.allclose(updated[0][k], start[k]) for k in start)
    for key in start:
        assert torch.allclose(updated[0][key], updated[1][key], atol=1e-5), key


def test_qk_clip_runs_after_every_inner_step() -> None:
    batch = pack_rollouts([[0, 1]], [[[1, 2, 1], [3]]], [[1.0, 0.0]], pad_id=0)
    model = tiny_model(vocab_size=4, seed=1)
    metrics = policy_update(model, batch, tau=0.3, inner_steps=3, lr=0.01, weight_decay=0.0, micro_batch_size=2,
                            qk_clip_tau=1e-6)
    heads = TINY_SHAPES["num_hidden_layers"] * TINY_SHAPES["num_attention_heads"]
    # Heads whose largest logit is positive get clipped at every step (a random model has a few negative ones).
    assert heads < metrics["qk_clip/num_clipped"] <= 3 * heads
    relaxed = policy_update(model, batch, tau=0.3, inner_steps=1, lr=0.01, weight_decay=0.0, micro_batch_size=2,
                            qk_clip_tau=1e6)
    assert relaxed["qk_clip/num_clipped"] == 0
