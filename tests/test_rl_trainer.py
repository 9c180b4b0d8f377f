"""The RL loop: it learns a trivially learnable task, and `rl()` runs end to end on tiny inputs."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from k2core.chat import BOS, EOS, PAD, SPECIAL_TOKENS
from k2core.model import K2Config, K2ForCausalLM
from k2core.rl.batch import pack_rollouts
from k2core.rl.loss import sequence_logprobs
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
        checkpoint_every=1,
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


def test_the_trainers_logprobs_are_those_the_sampler_drew_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """At temperature 0.7 and top_p 0.8 the log-prob the update uses for a sampled response is the sum, over its
    steps, of the log of the (renormalised) probability torch.multinomial was given for the drawn token."""
    from k2core.rl import trainer

    model = tiny_model(vocab_size=12, seed=5)
    temperature, top_p, eos = 0.7, 0.8, [11]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    multinomial = torch.multinomial

    def recording(probs: torch.Tensor, num_samples: int, *args: object, **kwargs: object) -> torch.Tensor:
        drawn = multinomial(probs, num_samples, *args, **kwargs)
        seen.append((probs / probs.sum(dim=-1, keepdim=True), drawn.squeeze(-1)))
        return drawn

    monkeypatch.setattr(torch, "multinomial", recording)
    prompts = [[1, 2, 3], [4, 5]]
    responses = sample_responses(model, prompts, 3, 7, temperature, eos, torch.Generator().manual_seed(0), 0, 6,
                                 top_p=top_p)
    monkeypatch.undo()
    rows = [r for group in responses for r in group]
    sampler_logp = torch.zeros(len(rows), dtype=torch.float64)
    for step, (probs, drawn) in enumerate(seen):
        for row, response in enumerate(rows):
            if step < len(response):
                assert int(drawn[row]) == response[step]
                sampler_logp[row] += math.log(float(probs[row, response[step]]))
    assert any(float((probs > 0).sum(dim=-1).min()) < 12 for probs, _ in seen)  # the nucleus did cut tokens

    calls: list[tuple[float, float]] = []
    original = trainer.token_logprobs

    def spy(model_, ids, mask, temperature_=1.0, top_p_=1.0, entropy=False):  # noqa: ANN001, ANN202
        calls.append((temperature_, top_p_))
        return original(model_, ids, mask, temperature_, top_p_, entropy=entropy)

    monkeypatch.setattr(trainer, "token_logprobs", spy)
    batch = pack_rollouts(prompts, responses, [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], pad_id=0)
    policy_update(model, batch, tau=0.3, inner_steps=1, lr=0.0, weight_decay=0.0, micro_batch_size=6,
                  qk_clip_tau=100.0, temperature=temperature, top_p=top_p)
    assert calls and set(calls) == {(temperature, top_p)}
    model.train()
    ours = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask, temperature, top_p)
    assert torch.allclose(ours.double(), sampler_logp, atol=1e-4)
    at_one = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask)
    assert not torch.allclose(at_one.double(), sampler_logp, atol=1e-2)  # temperature 1 is not what was sampled


def test_the_update_reports_the_k15_loss_value_entropy_and_kl_by_hand() -> None:
    """One inner step starts at theta = theta_old (Delta = 0), so the loss is mean((r - rbar)^2) / (2 tau); the
    entropy is that of pi_old's sampling distribution; after the step the KL estimates are positive (k3 >= 0)."""
    prompts = [[0, 1], [0, 2, 2]]
    responses = [[[1, 2, 1], [3]], [[2, 2], [1, 1, 1, 3]]]
    batch = pack_rollouts(prompts, responses, [[1.0, 0.0], [0.25, 0.75]], pad_id=0)
    model = tiny_model(vocab_size=4, seed=3)
    model.train()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / 0.8
        probs = torch.softmax(logits, dim=-1)
        entropy = -(probs * probs.log()).sum(dim=-1)
        mask = batch.response_mask[:, 1:]
        expected_entropy = float(entropy[mask].mean())
    metrics = policy_update(model, batch, tau=0.3, inner_steps=1, lr=0.02, weight_decay=0.0, micro_batch_size=4,
                            qk_clip_tau=100.0, temperature=0.8)
    assert metrics["rl_loss"] == pytest.approx((0.25 + 0.25 + 0.0625 + 0.0625) / 4 / (2 * 0.3), rel=1e-5)
    assert metrics["abs_log_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["entropy"] == pytest.approx(expected_entropy, rel=1e-5)
    assert metrics["kl_k3"] > 0 and metrics["kl_k1"] != 0.0
    with torch.no_grad():
        new = torch.log_softmax(model(input_ids=batch.input_ids,
                                      attention_mask=batch.attention_mask).logits[:, :-1] / 0.8, dim=-1)
        old = probs.log()
        targets = batch.input_ids[:, 1:, None]
        log_ratio = (new.gather(-1, targets) - old.gather(-1, targets)).squeeze(-1)[mask]
    assert metrics["kl_k1"] == pytest.approx(float(-log_ratio.mean()), rel=1e-4)
    assert metrics["kl_k3"] == pytest.approx(float((log_ratio.exp() - 1 - log_ratio).mean()), rel=1e-4)


def test_a_kept_optimizer_carries_state_across_updates() -> None:
    from k2core.rl.trainer import _optimizer

    batch = pack_rollouts([[0, 1]], [[[1, 2, 1], [3]]], [[1.0, 0.0]], pad_id=0)
    ends = []
    for keep in (False, True):
        model = tiny_model(vocab_size=4, seed=2)
        optimizer = _optimizer(model, 0.01, 0.0) if keep else None
        for _ in range(2):
            policy_update(model, batch, tau=0.3, inner_steps=1, lr=0.01, weight_decay=0.0, micro_batch_size=2,
                          qk_clip_tau=100.0, optimizer=optimizer)
        ends.append(model.state_dict())
        if keep:
            assert optimizer.state  # momentum buffers survive the update
    assert any(not torch.equal(ends[0][k], ends[1][k]) for k in ends[0])  # momentum from update 1 moved update 2


def test_rl_with_a_kept_optimizer_resumes_bitwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from k2core.rl import trainer
    from k2core.rl.resume import STATE_FILE

    paths = write_pipeline_inputs(tmp_path)
    cfg = rl_config(iterations=3, reset_optimizer=False, ptx_coef=0.0)
    straight = _run(cfg, paths, tmp_path / "straight")
    assert "optimizer" in torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)
    _interrupt_at(monkeypatch, trainer, "policy_update", calls=3)
    with pytest.raises(_Interrupted):
        _run(cfg, paths, tmp_path / "resumed")
    monkeypatch.undo()
    resumed = _run(cfg, paths, tmp_path / "resumed")
    assert resumed["history"] == straight["history"]
    expected, got = _weights(straight["hf_dir"]), _weights(resumed["hf_dir"])
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    reset = _run(rl_config(iterations=3, ptx_coef=0.0), paths, tmp_path / "reset")
    assert any(not torch.equal(expected[n], w) for n, w in _weights(reset["hf_dir"]).items())
    with pytest.raises(ValueError, match="written with rl.reset_optimizer=False, this run has rl.reset_optimizer=True"):
        _run(rl_config(iterations=3, ptx_coef=0.0), paths, tmp_path / "resumed")


def test_rl_mixes_gym_domains_and_logs_per_domain_and_policy_statistics(tmp_path: Path) -> None:
    paths = write_pipeline_inputs(tmp_path)
    tracker = InMemoryTracker()
    domains = {"math": 1.0, "rg/basic_arithmetic": 1.0, "ifeval": 1.0}
    cfg = rl_config(iterations=1, prompts_per_iteration=3, domains=domains, top_p=0.9, ptx_coef=0.0,
                    token_budgets={"math": 6, "rg": 5, "ifeval": 4})
    result = _run(cfg, paths, tmp_path / "out", tracker)
    for name in domains:
        assert len(tracker.metrics[f"rl/reward/{name}"]) == 1
        assert 0.0 <= tracker.last(f"rl/pass_rate/{name}") <= 1.0
    for key in ("rl/entropy", "rl/kl_k1", "rl/kl_k3", "rl/response_len", "rl/clip_rate", "rl/temperature",
                "rl/rollout_tokens_per_s", "rl/train_tokens_per_s"):
        assert len(tracker.metrics[key]) == 1, key
    assert tracker.last("rl/entropy") > 0 and tracker.last("rl/kl_k3") >= 0
    assert tracker.last("rl/rollout_tokens_per_s") > 0 and tracker.last("rl/train_tokens_per_s") > 0
    final = result["final"]
    assert "rollout_tokens_per_s" not in final  # wall-clock rates stay out of the reproducible history
    assert 0 < final["response_len"] <= 6
    # the overall reward is the mean of the three equal-sized domains' rewards
    assert final["reward_mean"] == pytest.approx(sum(final[f"reward/{n}"] for n in domains) / 3)
    with pytest.raises(KeyError, match="no token budget for task type 'code'"):
        _run(rl_config(domains={"code": 1.0}), paths, tmp_path / "other")
