"""The experiments' own logic: configs, token ratio, the three run types on a micro model, QK-Clip in a run."""

import math

import pytest
import torch

from experiments.analysis import best_run, final_val_loss, token_ratio, tokens_to_reach
from experiments.config import DataConfig, LogitExplosionConfig, RunConfig, TokenEfficiencyConfig, load_params
from experiments.figures import write_csv
from experiments.runner import RunResult, train
from k2core.model import K2Config
from k2core.train.data import TokenBlocks

MICRO = K2Config(
    vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
    first_k_dense_replace=1, num_attention_heads=2, num_key_value_heads=2, n_routed_experts=2, num_experts_per_tok=1,
    n_shared_experts=1, n_group=1, topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=True, q_lora_rank=16,
    kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, max_position_embeddings=64,
    rope_theta=10000.0, rms_norm_eps=1e-6, initializer_range=0.02, router_bias_update_speed=0.001,
)


def _blocks() -> TokenBlocks:
    """Shifted arithmetic sequences: learnable, so Muon quickly grows sharp attention."""
    offsets = torch.randint(0, 64, (32, 1), generator=torch.Generator().manual_seed(0))
    ids = (torch.arange(16).repeat(32, 1) * 3 + offsets) % 64
    return TokenBlocks(ids, ids.clone())


def _run(optimizer: str, steps: int, lr: float = 0.05, tau: float = 1.0) -> RunConfig:
    return RunConfig(optimizer=optimizer, lr=lr, weight_decay=0.0, tau=tau, seed=0, steps=steps, batch_size=8,
                     eval_every=10, eval_batches=1, warmup_fraction=0.0, decay_fraction=0.0, final_lr_fraction=1.0)


def _result(lr: float, val_loss: list[float], tokens_per_step: int = 100, eval_every: int = 10) -> RunResult:
    run = RunResult(config=_run("muonclip", eval_every * (len(val_loss) - 1), lr=lr), tokens_per_step=tokens_per_step)
    run.eval_steps = [i * eval_every for i in range(len(val_loss))]
    run.val_loss = list(val_loss)
    run.loss = [1.0]
    return run


def test_params_yaml_parses_into_the_configs():
    params = load_params()
    DataConfig(**params["data"])
    clip = LogitExplosionConfig(**params["logit_explosion"]).run("muonclip", 0.1)
    assert clip.lr == 0.1 and clip.tau == params["logit_explosion"]["tau"]
    sweep = TokenEfficiencyConfig(**params["token_efficiency"])
    assert len(sweep.muonclip_lrs) >= 3 and len(sweep.adamw_lrs) >= 3
    short = sweep.budget_run(0.02, 0.5)
    assert (short.optimizer, short.lr, short.steps, short.eval_every) == ("muonclip", 0.02, round(sweep.steps / 2),
                                                                           round(sweep.steps / 2))
    with pytest.raises(ValueError):
        sweep.budget_run(0.02, 1.0)


def test_tokens_to_reach_interpolates_between_evaluations():
    assert tokens_to_reach([0, 100, 200], [5.0, 4.0, 3.0], 3.5) == pytest.approx(150.0)
    assert tokens_to_reach([0, 100, 200], [5.0, 4.0, 3.0], 6.0) == 0.0
    assert tokens_to_reach([0, 100, 200], [5.0, 4.0, 3.0], 2.9) is None
    with pytest.raises(ValueError):
        tokens_to_reach([0, 100], [5.0], 4.0)


def test_token_ratio_is_tokens_to_baseline_final_over_baseline_tokens():
    baseline = _result(0.01, [6.0, 5.0, 4.5, 4.0, 3.8])  # 40 steps of 100 tokens, final 3.8
    faster = _result(0.02, [6.0, 4.5, 4.0, 3.6, 3.4])  # crosses 3.8 halfway between steps 20 and 30
    assert token_ratio(faster, baseline) == pytest.approx(2500 / 4000)
    assert token_ratio(baseline, faster) is None  # never reaches 3.4


def test_best_run_skips_diverged_runs():
    good, better, diverged = _result(0.01, [6.0, 4.0]), _result(0.02, [6.0, 3.5]), _result(0.04, [6.0, 1.0])
    diverged.loss = [1.0, math.nan]
    assert final_val_loss(diverged) == math.inf
    assert best_run([good, diverged, better]) is better


@pytest.mark.parametrize("optimizer", ["muon", "muonclip", "adamw"])
def test_each_run_type_trains_and_records(optimizer):
    torch.set_num_threads(1)
    result = train(MICRO, _blocks(), _blocks(), _run(optimizer, steps=3))
    assert result.steps == [0, 1, 2] and result.eval_steps == [0, 3]
    assert len(result.max_logit) == len(result.clipped_fraction) == 3
    assert all(math.isfinite(x) for x in result.loss + result.max_logit + result.val_loss)
    assert result.val_loss[-1] < result.val_loss[0]
    assert result.eval_tokens == [0, 3 * 8 * 16]
    if optimizer != "muonclip":
        assert result.clipped_fraction == [0.0, 0.0, 0.0]


def test_same_seed_gives_the_same_first_step_for_every_arm():
    runs = [train(MICRO, _blocks(), _blocks(), _run(optimizer, steps=1)) for optimizer in ("muon", "adamw")]
    assert runs[0].loss[0] == runs[1].loss[0] and runs[0].val_loss[0] == runs[1].val_loss[0]


def test_qk_clip_holds_max_logit_near_a_forced_low_tau():
    torch.set_num_threads(1)
    tau = 1.0
    vanilla = train(MICRO, _blocks(), _blocks(), _run("muon", steps=30, tau=tau))
    clipped = train(MICRO, _blocks(), _blocks(), _run("muonclip", steps=30, tau=tau))
    assert max(vanilla.max_logit) > 2 * tau
    assert sum(vanilla.clipped_fraction) == 0
    assert sum(clipped.clipped_fraction) > 0
    # The clip brings S_max to tau on the updated weights; the next forward sees one more update on top, so it may
    # overshoot tau by about what one step moves the max logit (measured on the unclipped run over the same steps),
    # while the unclipped run keeps climbing well past it.
    step_rise = max(b - a for a, b in zip(vanilla.max_logit[-11:], vanilla.max_logit[-10:]))
    assert max(clipped.max_logit[-10:]) <= tau + 1.1 * step_rise < max(vanilla.max_logit[-10:])


def test_write_csv_rejects_ragged_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"step": [0, 1], "loss": [2.0, 1.5]})
    assert path.read_text().splitlines() == ["step,loss", "0,2.0", "1,1.5"]
    with pytest.raises(ValueError):
        write_csv(tmp_path / "bad.csv", {"step": [0, 1], "loss": [2.0]})
