"""A NaN or inf loss or gradient skips the optimizer step (weights, Muon state, router biases unchanged; the lr schedule
and the batches go on as a function of the step), is counted as `skipped_steps`, and too many in a row stop the stage
with the last good checkpoint kept. Under 2 ranks (deepspeed launcher, gloo) a NaN on one rank skips on both.

The 2-rank test starts this file as a worker through the deepspeed launcher, as tests/test_train_distributed.py does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch

from k2core.model import K2ForCausalLM
from k2core.optim import Muon, wsd_from_fractions
from k2core.rl.batch import pack_rollouts
from k2core.rl.trainer import policy_update
from k2core.train import Callback, LoopConfig, PretrainConfig, load_tokenizer, pack_corpus, run_training
from k2core.train import loop
from k2core.train.loop import NonFiniteTrainingError
from tests.test_train_data import build_tokenizer, corpus_frame
from tests.test_rl_trainer import tiny_model
from tests.test_train_distributed import launch_ranks
from tests.test_train_loop import MODEL, loop_config

RUN = dict(steps=5, gradient_accumulation=2, eval_every=5, checkpoint_every=5)


class Poison(Callback):
    """Makes the loss (`kind="loss"`: NaN logits) or one weight's gradient (`kind="grad"`: inf) non-finite in the
    training forward/backward of the chosen steps; evaluation passes are left alone."""

    def __init__(self, model: K2ForCausalLM, steps: Iterable[int], kind: str) -> None:
        self.steps, self.next_step = set(steps), 1
        active = lambda: model.training and self.next_step in self.steps  # noqa: E731
        if kind == "loss":
            model.lm_head.register_forward_hook(lambda _m, _i, out: out * float("nan") if active() else None)
        else:
            model.model.layers[0].self_attn.o_proj.weight.register_hook(
                lambda grad: grad * float("inf") if active() else grad)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self.next_step = step + 1


class Record(Callback):
    """Weights, metrics and (when `muon` gives the loop's optimizer) Muon's state after every step."""

    def __init__(self, model: K2ForCausalLM, muon: Callable[[], Muon] | None = None) -> None:
        self.model, self.muon = model, muon
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.states: dict[int, dict] = {}
        self.metrics: dict[int, dict[str, float]] = {}

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self.weights[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.muon is not None:
            self.states[step] = copy.deepcopy(self.muon().state_dict()["state"])
        self.metrics[step] = dict(metrics)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nan")
    corpus_frame(80).to_parquet(root / "corpus.parquet")
    return {"corpus": root / "corpus.parquet", "tokenizer": build_tokenizer(root / "tok")}


def _blocks(inputs: dict[str, Path]):
    return pack_corpus(inputs["corpus"], load_tokenizer(inputs["tokenizer"]), 16, 0.2, 0)


@pytest.fixture(scope="module")
def data(inputs):
    return _blocks(inputs)


@pytest.fixture
def muon(monkeypatch) -> Callable[[], Muon]:
    """The Muon of the engine the loop builds (read only: a skipped step must leave its state untouched)."""
    built: list = []
    real = loop.build_engine

    def recording(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "build_engine", recording)
    return lambda: built[-1].optimizer


def _train(cfg: LoopConfig, data, out: Path, poison_steps=(), kind="grad", muon=None):
    torch.manual_seed(0)
    model = K2ForCausalLM(MODEL)
    record = Record(model, muon)
    result = run_training(model, data[0], data[1], cfg, out, "pretrain", [Poison(model, poison_steps, kind), record])
    return result, record, model


def _equal(a: dict, b: dict) -> bool:
    """Same keys and bitwise-equal values (tensors, or plain values such as step counters)."""
    same = lambda x, y: torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y  # noqa: E731
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def _lr(cfg: LoopConfig, step: int) -> float:
    """The lr of step `step` (1-based) on the WSD schedule: what every step gets, skipped steps before it or not."""
    schedule = wsd_from_fractions(cfg.steps, cfg.warmup_fraction, cfg.decay_fraction, cfg.final_lr_fraction,
                                  cfg.decay_shape)
    return cfg.lr * schedule(step - 1)


@pytest.mark.parametrize(("zero_stage", "kind"), [(0, "loss"), (0, "grad"), (1, "loss"), (1, "grad"), (2, "loss"), (2, "grad")])
def test_nonfinite_step_is_skipped_counted_and_the_next_step_proceeds(data, tmp_path, muon, zero_stage, kind):
    cfg = PretrainConfig(**loop_config(**RUN, zero_stage=zero_stage))
    result, record, _ = _train(cfg, data, tmp_path, poison_steps={3}, kind=kind, muon=muon)
    skipped = {step: m["skipped_steps"] for step, m in record.metrics.items()}
    assert skipped == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0} and result["skipped_steps"] == 1.0
    assert _equal(record.weights[3], record.weights[2])  # weights, QK-Clip and router biases untouched
    assert record.states[2] and record.states[3].keys() == record.states[2].keys()
    assert all(_equal(record.states[3][k], record.states[2][k]) for k in record.states[2])  # momentum, Adam moments
    assert not _equal(record.weights[4], record.weights[3]) and math.isfinite(record.metrics[4]["loss"])
    assert not math.isfinite(record.metrics[3]["loss"]) if kind == "loss" else math.isfinite(record.metrics[3]["loss"])
    assert "max_logit" not in record.metrics[3] and "max_logit" in record.metrics[4]
    lrs = [record.metrics[step]["lr"] for step in range(1, 6)]
    assert lrs == pytest.approx([_lr(cfg, step) for step in range(1, 6)], rel=1e-12)
    assert result["final_train_loss"] == record.metrics[5]["loss"]


def test_consecutive_skips_stop_the_stage_and_keep_the_last_good_checkpoint(data, tmp_path):
    cfg = PretrainConfig(**loop_config(steps=8, gradient_accumulation=1, eval_every=8, checkpoint_every=3,
                                       max_consecutive_skipped_steps=3))
    straight, _, reference = _train(cfg, data, tmp_path / "straight")
    with pytest.raises(NonFiniteTrainingError) as caught:
        _train(cfg, data, tmp_path / "poisoned", poison_steps={4, 5, 6})
    message = str(caught.value)
    assert message.startswith("pretrain: steps 4-6 (3 in a row) had a NaN or inf loss or gradient and were skipped")
    assert f"{tmp_path / 'poisoned' / 'ds' / 'step3'}, is kept" in message
    assert "pretrain.max_consecutive_skipped_steps" in message
    checkpoints = tmp_path / "poisoned" / "ds"
    assert (checkpoints / "latest").read_text() == "step3" and [p.name for p in checkpoints.glob("step*")] == ["step3"]
    resumed, _, model = _train(cfg, data, tmp_path / "poisoned")  # the re-run, now without the NaNs, resumes at 4
    assert resumed["skipped_steps"] == 0.0 and resumed["final_train_loss"] == straight["final_train_loss"]
    assert _equal(model.state_dict(), reference.state_dict())


def test_rl_inner_step_with_a_nan_gradient_changes_nothing_and_the_next_one_proceeds():
    """3 inner steps with the 2nd poisoned end bitwise where 2 clean inner steps end: the skipped step left weights,
    Muon state, router biases and loads as they were."""
    batch = pack_rollouts([[0, 1], [0, 2, 2]], [[[1, 2, 1], [3]], [[2, 2], [1, 1, 1, 3]]],
                          [[1.0, 0.0], [0.25, 0.75]], pad_id=0)
    args = dict(tau=0.3, lr=0.01, weight_decay=0.1, micro_batch_size=4, qk_clip_tau=100.0)
    clean = tiny_model(vocab_size=4, seed=3)
    assert policy_update(clean, batch, inner_steps=2, **args)["skipped_steps"] == 0.0
    poisoned = tiny_model(vocab_size=4, seed=3)
    backward_calls = []

    def poison(grad: torch.Tensor) -> torch.Tensor:
        backward_calls.append(1)
        return grad * float("nan") if len(backward_calls) == 2 else grad

    poisoned.model.layers[0].self_attn.o_proj.weight.register_hook(poison)
    metrics = policy_update(poisoned, batch, inner_steps=3, **args)
    assert metrics["skipped_steps"] == 1.0 and len(backward_calls) == 3 and math.isfinite(metrics["loss"])
    assert _equal(poisoned.state_dict(), clean.state_dict())


@pytest.mark.multiproc
def test_two_ranks_skip_together_when_only_one_sees_a_nan(inputs, tmp_path):
    """Only rank 1's gradient is poisoned at step 2 (ZeRO 0 and 2): both ranks skip it, then both train on, equal."""
    launch_ranks(Path(__file__), {"out": str(tmp_path), **{key: str(path) for key, path in inputs.items()}})
    for stage in (0, 2):
        ranks = [json.loads((tmp_path / f"stage{stage}_rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["skipped"] for r in ranks] == [[0.0, 1.0, 1.0, 1.0]] * 2
        assert all(r["unchanged_by_step_2"] and r["changed_by_step_3"] for r in ranks)
        assert ranks[0]["weights"] == ranks[1]["weights"]


def _worker(args: dict) -> None:
    """Each rank: a 4-step run per ZeRO stage with rank 1's gradient poisoned at step 2; writes what it saw."""
    torch.set_num_threads(1)
    out = Path(args["out"])
    data = _blocks({key: Path(args[key]) for key in ("corpus", "tokenizer")})
    for stage in (0, 2):
        cfg = PretrainConfig(**loop_config(steps=4, gradient_accumulation=1, micro_batch_size=1, eval_every=4,
                                           checkpoint_every=4, zero_stage=stage))
        torch.manual_seed(0)
        model = K2ForCausalLM(MODEL)
        rank = int(os.environ["RANK"])
        record = Record(model)
        run_training(model, data[0], data[1], cfg, out / f"stage{stage}", "pretrain",
                     [Poison(model, {2} if rank == 1 else set(), "grad"), record])
        final = hashlib.sha256(b"".join(v.numpy().tobytes() for v in record.weights[4].values())).hexdigest()
        (out / f"stage{stage}_rank{rank}.json").write_text(json.dumps({
            "skipped": [record.metrics[step]["skipped_steps"] for step in range(1, 5)], "weights": final,
            "unchanged_by_step_2": _equal(record.weights[2], record.weights[1]),
            "changed_by_step_3": not _equal(record.weights[3], record.weights[2]),
        }))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
