"""The DeepSpeed MuonClip loop on a very small K2 model: logging, resume after a crash, raw-gradient clipping, SFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.test_train_data import build_tokenizer, corpus_frame, sft_frame

from k2core.model import K2Config, K2ForCausalLM
from k2core.optim import uses_muon
from k2core.tracking import InMemoryTracker
from k2core.train import Callback, PretrainConfig, SFTConfig, pretrain, sft

MODEL = K2Config.preset(
    "tiny", vocab_size=512, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16,
    q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=64,
)


def loop_config(**overrides) -> dict:
    base = dict(steps=6, micro_batch_size=2, gradient_accumulation=2, seq_len=16, lr=3e-3, weight_decay=0.1,
                warmup_fraction=0.2, decay_fraction=0.3, final_lr_fraction=0.1, decay_shape="cosine",
                qk_clip_tau=100.0, eval_every=3, eval_batches=2, checkpoint_every=3, zero_stage=0,
                gradient_clipping=1.0, max_consecutive_skipped_steps=3, val_fraction=0.2, seed=0)
    return {**base, **overrides}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    corpus_frame(80).to_parquet(root / "corpus.parquet")
    sft_frame().to_parquet(root / "sft.parquet")
    return {"tokenizer": build_tokenizer(root / "tok"), "corpus": root / "corpus.parquet", "sft": root / "sft.parquet"}


@pytest.fixture(scope="module")
def straight_run(inputs, tmp_path_factory) -> tuple[dict, InMemoryTracker, Path]:
    out = tmp_path_factory.mktemp("straight")
    tracker = InMemoryTracker()
    metrics = pretrain(MODEL, PretrainConfig(**loop_config()), inputs["corpus"], inputs["tokenizer"], out, tracker)
    return metrics, tracker, out


class _Crash(Exception):
    pass


class _CrashAfterCheckpoint(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        if step == self.step:
            raise _Crash(f"simulated crash after the step-{step} checkpoint")


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return K2ForCausalLM.from_pretrained(out / "hf").state_dict()


def test_pretrain_logs_trains_and_exports(straight_run):
    metrics, tracker, out = straight_run
    assert metrics["steps"] == 6 and metrics["tokens_per_s"] > 0
    losses = [value for _, value in tracker.metrics["train/loss"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert metrics["final_train_loss"] == losses[-1]
    assert [step for step, _ in tracker.metrics["eval/val_loss"]] == [3, 6]
    lrs = [value for _, value in tracker.metrics["train/lr"]]
    assert max(lrs) == pytest.approx(3e-3) and lrs[-1] < lrs[2]
    for key in ("train/max_logit/layer_0", "train/max_logit/layer_1", "train/clipped_head_fraction"):
        assert len(tracker.metrics[key]) == 6
    assert {"train/tokens_per_s", "train/max_logit", "train/skipped_steps"} <= set(tracker.metrics)
    assert all(key.split("/")[0] in ("train", "eval") for key in tracker.metrics)  # the stage is a tag, not a key
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (out / "ds").iterdir()) == ["latest", "step6"]


def test_resume_after_crash_matches_straight_run(straight_run, inputs, tmp_path):
    cfg = PretrainConfig(**loop_config())
    with pytest.raises(_Crash):
        pretrain(MODEL, cfg, inputs["corpus"], inputs["tokenizer"], tmp_path, InMemoryTracker(),
                 callbacks=[_CrashAfterCheckpoint(3)])
    assert not (tmp_path / "hf").exists()
    tracker = InMemoryTracker()
    resumed = pretrain(MODEL, cfg, inputs["corpus"], inputs["tokenizer"], tmp_path, tracker)
    assert [step for step, _ in tracker.metrics["train/loss"]] == [4, 5, 6]
    straight, _, straight_out = straight_run
    assert resumed["final_train_loss"] == pytest.approx(straight["final_train_loss"], rel=1e-5)
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], rel=1e-5)
    ours, ref = _weights(tmp_path), _weights(straight_out)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-6)


def test_gradient_clipping_acts_on_raw_gradients_not_on_muon_updates(inputs, tmp_path):
    """Clipping rescales the raw gradient; Newton-Schulz removes that scale, so Muon steps are unchanged.

    (DeepSpeed ZeRO-1/2 would clip the orthogonalised update instead and shrink every Muon step.)
    """
    deltas = {}
    torch.manual_seed(0)  # pretrain seeds with cfg.seed before building the model
    init = K2ForCausalLM(MODEL).state_dict()
    clip = 1e-2
    for max_norm in (0.0, clip):
        out = tmp_path / f"clip{max_norm}"
        tracker = InMemoryTracker()
        cfg = PretrainConfig(**loop_config(steps=1, gradient_accumulation=1, gradient_clipping=max_norm,
                                           weight_decay=0.0, warmup_fraction=0.0, decay_fraction=0.0, eval_batches=1))
        pretrain(MODEL, cfg, inputs["corpus"], inputs["tokenizer"], out, tracker)
        assert tracker.last("train/grad_norm") > 10 * clip
        after = _weights(out)
        deltas[max_norm] = {name: after[name] - init[name] for name in after if uses_muon(name, after[name])}
    # atol 5e-6: Muon's fp32 Gram Newton-Schulz (default on rectangular matrices) rounds ill-conditioned momenta to
    # ~1e-4 of the update, so a 100x smaller gradient is not bit-for-bit scale invariant (~1e-8 with gram=False).
    for name, delta in deltas[0.0].items():
        torch.testing.assert_close(deltas[clip][name], delta, rtol=1e-3, atol=5e-6)
    update_norm = {max_norm: torch.cat([d.flatten() for d in ds.values()]).norm() for max_norm, ds in deltas.items()}
    assert float(update_norm[clip] / update_norm[0.0]) == pytest.approx(1.0, abs=1e-4)  # clipped update, same size


def test_low_tau_makes_qk_clip_fire_and_is_logged(inputs, tmp_path):
    tracker = InMemoryTracker()
    cfg = PretrainConfig(**loop_config(steps=2, gradient_accumulation=1, qk_clip_tau=1e-3, eval_every=2,
                                       checkpoint_every=2))
    pretrain(MODEL, cfg, inputs["corpus"], inputs["tokenizer"], tmp_path, tracker)
    fractions = [v for _, v in tracker.metrics["train/clipped_head_fraction"]]
    assert fractions[0] == 1.0 and fractions[1] > 0  # every head starts above tau = 1e-3


def test_sft_from_pretrained_export(straight_run, inputs, tmp_path):
    _, _, pre_out = straight_run
    tracker = InMemoryTracker()
    cfg = SFTConfig(**loop_config(steps=2, seq_len=48, eval_every=2, checkpoint_every=2, val_fraction=0.25))
    metrics = sft(cfg, pre_out / "hf", inputs["sft"], inputs["tokenizer"], tmp_path, tracker, model_config=MODEL)
    assert metrics["steps"] == 2 and metrics["final_val_loss"] > 0
    assert len(tracker.metrics["train/loss"]) == 2
    assert K2ForCausalLM.from_pretrained(tmp_path / "hf").config == MODEL



def test_sft_loss_is_a_mean_over_target_tokens_however_the_batch_is_split(straight_run, inputs, tmp_path):
    """SFT micro-batches hold different numbers of assistant tokens. Each is weighted by its share of the step's
    target tokens, so micro-batch 4 x 1 accumulation step and 1 x 4 give the same loss, gradient norm and weights
    (with equal weights per micro-batch the step-1 gradients differed by 1.25%)."""
    _, _, pre_out = straight_run
    runs = {}
    for micro, accumulation in ((4, 1), (1, 4)):
        tracker = InMemoryTracker()
        cfg = SFTConfig(**loop_config(steps=2, seq_len=48, eval_every=2, checkpoint_every=2, val_fraction=0.25,
                                      micro_batch_size=micro, gradient_accumulation=accumulation))
        sft(cfg, pre_out / "hf", inputs["sft"], inputs["tokenizer"], tmp_path / f"{micro}x{accumulation}", tracker,
            model_config=MODEL)
        runs[micro] = tracker
    for metric in ("train/loss", "train/grad_norm"):
        whole, split = ([v for _, v in runs[m].metrics[metric]] for m in (4, 1))
        torch.testing.assert_close(torch.tensor(split), torch.tensor(whole), rtol=1e-5, atol=0)
    ours, ref = _weights(tmp_path / "1x4"), _weights(tmp_path / "4x1")
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5)


def test_cutting_the_untrained_tail_changes_no_loss_and_no_gradient():
    """Columns after the last target of every row are cut; loss and gradients are those of the whole batch."""
    from k2core.train.loop import untrained_tail_start

    torch.manual_seed(0)
    model = K2ForCausalLM(MODEL)
    ids = torch.randint(0, MODEL.vocab_size, (3, 20))
    labels = ids.clone()
    labels[:, :4] = -100  # a prompt
    for row, end in enumerate((9, 13, 7)):  # right padding after each chat
        labels[row, end:] = -100
    real = labels != -100
    real[:, :4] = True
    width = untrained_tail_start(labels)
    assert width == 13
    losses, grads = [], []
    for cut in (20, width):
        model.zero_grad()
        loss = model(input_ids=ids[:, :cut], labels=labels[:, :cut], token_mask=real[:, :cut]).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    for short, full in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-7)
    packed = torch.randint(0, MODEL.vocab_size, (2, 8))
    assert untrained_tail_start(packed) == 8  # pretraining blocks: nothing to cut
