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
from k2core.rl.trainer import RLConfig, metric_key, policy_update, rl, sample_responses
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
        reward_timeout_s=20.0, checkpoint_every=1,
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
        assert len(tracker.metrics[metric_key(key)]) == cfg.iterations
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


def _weights(hf_dir: str | Path) -> dict[str, torch.Tensor]:
    return K2ForCausalLM.from_pretrained(hf_dir).state_dict()


def _run(cfg: RLConfig, paths: dict[str, Path], out: Path, tracker: InMemoryTracker | None = None) -> dict:
    return rl(cfg, paths["init"], paths["math"], paths["sft"], paths["tokenizer"], out, tracker or InMemoryTracker())


class _Interrupted(RuntimeError):
    pass


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: int) -> None:
    """Make `module.name` raise at its `calls`-th call, as a crash at that point would end the run."""
    original = getattr(module, name)
    seen = []

    def wrapped(*args: object, **kwargs: object) -> object:
        seen.append(1)
        if len(seen) == calls:
            raise _Interrupted(f"{name} call {calls}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.fixture(scope="module")
def straight_rl(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], RLConfig, dict]:
    """An uninterrupted 3-iteration run with PTX on and a resume state after every iteration."""
    root = tmp_path_factory.mktemp("rl-straight")
    paths = write_pipeline_inputs(root)
    cfg = rl_config(iterations=3, checkpoint_every=1)
    return paths, cfg, _run(cfg, paths, root / "out")


def test_rl_resumes_bitwise_after_an_interrupted_iteration(straight_rl, tmp_path, monkeypatch) -> None:
    """A run that dies inside iteration 2 (after the states of iterations 0 and 1) and is re-run ends with the
    same weights, bit for bit, and the same metric history as the uninterrupted run; only iteration 2 reruns."""
    from k2core.rl import trainer
    from k2core.rl.resume import STATE_FILE

    paths, cfg, straight = straight_rl
    _interrupt_at(monkeypatch, trainer, "policy_update", calls=3)
    with pytest.raises(_Interrupted):
        _run(cfg, paths, tmp_path)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["iteration"] == 2
    monkeypatch.undo()

    tracker = InMemoryTracker()
    resumed = _run(cfg, paths, tmp_path, tracker)
    assert [step for step, _ in tracker.metrics["train/loss"]] == [2]
    assert resumed["history"] == straight["history"]
    expected, got = _weights(straight["hf_dir"]), _weights(resumed["hf_dir"])
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_crash_during_the_state_save_keeps_the_previous_state(straight_rl, tmp_path, monkeypatch) -> None:
    """Killed between writing the new state and renaming it into place (the "save" crash point), the folder
    still holds the previous complete state; the re-run redoes one iteration and ends bitwise equal."""
    from k2core.rl import resume

    paths, cfg, straight = straight_rl
    _interrupt_at(monkeypatch, resume, "crash_point", calls=2)
    with pytest.raises(_Interrupted):
        _run(cfg, paths, tmp_path)
    monkeypatch.undo()
    assert torch.load(tmp_path / resume.STATE_FILE, weights_only=True)["iteration"] == 1
    assert torch.load(tmp_path / f".{resume.STATE_FILE}.tmp", weights_only=True)["iteration"] == 2

    resumed = _run(cfg, paths, tmp_path)
    expected, got = _weights(straight["hf_dir"]), _weights(resumed["hf_dir"])
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert not (tmp_path / f".{resume.STATE_FILE}.tmp").exists()


def test_a_finished_state_reruns_nothing_and_a_foreign_state_is_refused(straight_rl, tmp_path) -> None:
    from k2core.rl.resume import STATE_FILE

    paths, cfg, straight = straight_rl
    out = Path(straight["hf_dir"]).parent
    tracker = InMemoryTracker()
    again = _run(cfg, paths, out, tracker)
    assert "train/loss" not in tracker.metrics
    assert again["final"] == straight["final"]
    with pytest.raises(ValueError, match="holds 3 RL iterations but rl.iterations is 2"):
        _run(rl_config(iterations=2), paths, out)
    (tmp_path / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=f"{STATE_FILE} cannot be read"):
        _run(cfg, paths, tmp_path)
