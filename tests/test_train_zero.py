"""k2's Muon on DeepSpeed ZeRO stages 1 and 2: exact against stage 0, raw-gradient clipping, QK-Clip on the fp32
master partitions, and 2 ranks (deepspeed launcher, gloo) against 1 with a checkpoint round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from k2core.model import K2ForCausalLM
from k2core.optim import apply_qk_clip, uses_muon
from k2core.optim.flat_partition import FlatPartition
from k2core.optim.qk_clip import step_max_logits
from k2core.train import PretrainConfig, build_engine
from k2core.train.distributed import ensure_process_group
from tests import test_train_distributed as dense_dp
from tests.test_train_distributed import DENSE, DP_RUN, _losses, _train, _weights, launch_ranks
from tests.test_train_loop import MODEL, loop_config

# 3 dense layers: the two ranks' Muon partitions then meet inside a matrix (with 2 layers they meet between layers).
SPLIT = DENSE.model_copy(update={"num_hidden_layers": 3, "first_k_dense_replace": 3})
inputs = dense_dp.inputs  # its module-scoped corpus + tokenizer fixture
IDS = torch.randint(0, MODEL.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))


def test_flat_partition_finds_each_matrix_share():
    layout = FlatPartition(shapes=(torch.Size([2, 3]), torch.Size([4, 2])), offsets=(0, 8), size=8, rank=1, world=2)
    assert list(layout.local_pieces()) == [(1, slice(0, 8), slice(0, 8))]
    layout = FlatPartition(shapes=(torch.Size([3, 3]), torch.Size([2, 2])), offsets=(0, 12), size=8, rank=0, world=2)
    assert list(layout.local_pieces()) == [(0, slice(0, 8), slice(0, 8))]
    layout = FlatPartition(shapes=(torch.Size([3, 3]), torch.Size([2, 2])), offsets=(0, 12), size=8, rank=1, world=2)
    assert list(layout.local_pieces()) == [(0, slice(8, 9), slice(0, 1)), (1, slice(0, 4), slice(4, 8))]
    flat = torch.arange(16.0)
    assert torch.equal(layout.whole(flat, 1), torch.tensor([[12.0, 13.0], [14.0, 15.0]]))
    with pytest.raises(ValueError, match="past the 2 x 4 flat buffer"):
        FlatPartition(shapes=(torch.Size([3, 3]),), offsets=(0,), size=4, rank=0, world=2)


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stage_matches_stage_0_in_one_process(inputs, tmp_path, stage):
    """Same losses and weights as stage 0 (MoE model, heads clipped at every step, raw gradients clipped)."""
    run = loop_config(steps=4, qk_clip_tau=0.002, eval_every=4, checkpoint_every=4, gradient_clipping=0.5)
    reference = _train(run, inputs, tmp_path / "stage0")
    ours = _train({**run, "zero_stage": stage}, inputs, tmp_path / f"stage{stage}")
    fractions = ours.metrics["train/clipped_head_fraction"]
    assert all(fraction > 0 for _, fraction in fractions) and fractions == reference.metrics[
        "train/clipped_head_fraction"]
    torch.testing.assert_close(torch.tensor(_losses(ours)), torch.tensor(_losses(reference)), rtol=1e-6, atol=0)
    norms = [value for _, value in ours.metrics["train/grad_norm"]]
    ref_norms = [value for _, value in reference.metrics["train/grad_norm"]]
    assert min(ref_norms) > 0.5  # the clip was active on every step
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(ref_norms), rtol=1e-5, atol=0)
    weights, ref = _weights(tmp_path / f"stage{stage}"), _weights(tmp_path / "stage0")
    # 1e-5: the Gram Newton-Schulz of Muon's fp32 default rounds ill-conditioned momenta to ~1e-4 of the update
    # (k2core/optim/newton_schulz.py), so the reduction-order differences of the gradients grow to ~1e-6 in 4 steps
    # (~1e-8 with gram=False).
    for name in ref:
        torch.testing.assert_close(weights[name], ref[name], rtol=0, atol=1e-5)


def _first_muon_update(engine, model) -> dict[str, torch.Tensor]:
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    engine.backward(engine(input_ids=IDS, labels=IDS).loss)
    engine.step()
    return {name: p.detach() - before[name] for name, p in model.named_parameters()
            if uses_muon(name, p) and p.ndim == 2}


def _ours(clip: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = K2ForCausalLM(MODEL)
    cfg = PretrainConfig(**loop_config(gradient_accumulation=1, zero_stage=2, gradient_clipping=clip, weight_decay=0))
    return _first_muon_update(build_engine(model, cfg, with_schedule=False).engine, model)


def _deepspeed_muon(clip: float) -> dict[str, torch.Tensor]:
    """DeepSpeed's own Muon (`"optimizer": {"type": "Muon"}`) on ZeRO-2, which orthogonalises during the reduction."""
    import deepspeed

    torch.manual_seed(0)
    model = K2ForCausalLM(MODEL)
    for name, p in model.named_parameters():
        p.use_muon = uses_muon(name, p) and p.ndim == 2
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": clip,
              "zero_optimization": {"stage": 2},
              "optimizer": {"type": "Muon", "params": {"lr": 3e-3, "momentum": 0.95, "weight_decay": 0.0}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config,
                                      dist_init_required=False)
    return _first_muon_update(engine, model)


def test_gradient_clipping_acts_on_raw_gradients_not_on_the_orthogonalised_update():
    """Clipping the raw gradient to 1% leaves a first Muon step unchanged (Newton-Schulz normalises the direction),
    while DeepSpeed's stock ZeRO-2 Muon path clips the orthogonalised update and shrinks it by orders of magnitude."""
    ensure_process_group()
    free, clipped = _ours(0.0), _ours(0.01)
    for name in free:
        assert free[name].norm() > 0, name
        # atol 1e-6: fp32 Gram Newton-Schulz (the default on rectangular matrices) rounds to ~1e-4 of the update on
        # ill-conditioned momenta, so a 100x smaller input is not bit-for-bit scale invariant (the stock clip: ~100x).
        torch.testing.assert_close(clipped[name], free[name], rtol=1e-4, atol=1e-6)
    stock_free, stock_clipped = _deepspeed_muon(0.0), _deepspeed_muon(0.01)
    shrink = [float(stock_clipped[n].norm() / stock_free[n].norm()) for n in stock_free]
    assert max(shrink) < 0.01, shrink


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("stage", [1, 2])
def test_qk_clip_reaches_the_fp32_master_partitions(stage, bf16):
    """After a clip, a step with lr = 0 keeps the clipped weights: the master slices were clipped too (fp32, and bf16
    autocast as on GPU). Without the hook the next step restores the pre-clip master values, which the test shows."""
    ensure_process_group()
    for with_hook in (True, False):
        torch.manual_seed(0)
        model = K2ForCausalLM(MODEL)
        cfg = PretrainConfig(**loop_config(gradient_accumulation=1, zero_stage=stage))
        built = build_engine(model, cfg, with_schedule=False, bf16=bf16)
        built.engine.backward(built.engine(input_ids=IDS, labels=IDS).loss)
        built.engine.step()
        tau = float(torch.cat(step_max_logits(model)).min()) / 2
        assert apply_qk_clip(model, tau, on_scale=built.clip_hook if with_hook else None)["clipped_fraction"] == 1.0
        clipped = {name: p.detach().clone() for name, p in model.named_parameters()}
        for group in built.optimizer.param_groups:
            group["lr"] = 0.0
        built.engine.backward(built.engine(input_ids=IDS, labels=IDS).loss)
        built.engine.step()
        kept = [torch.equal(p.detach(), clipped[name]) for name, p in model.named_parameters()]
        assert all(kept) if with_hook else not all(kept)


def test_zero_3_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="zero_stage=3 is not supported"):
        PretrainConfig(**loop_config(zero_stage=3))


@pytest.mark.multiproc
def test_two_ranks_zero_1_and_2_match_one_rank_and_resume_exactly(inputs, tmp_path):
    """2 ranks at ZeRO-1 and ZeRO-2 (matrices split across the two partitions) give the 1-rank stage-0 trajectory
    (rtol 1e-5 on losses, as stage 0 does on 2 ranks); a ZeRO-2 run that crashes after its step-2 checkpoint and
    resumes, partitioned Muon momentum included, ends bitwise equal to the uninterrupted ZeRO-2 run."""
    reference = _losses(_train(loop_config(**DP_RUN), inputs, tmp_path / "dp1", model=SPLIT))
    launch_ranks(Path(__file__), {"cfg": loop_config(micro_batch_size=1, **DP_RUN), "out": str(tmp_path),
                                  **{key: str(path) for key, path in inputs.items()}})
    result = json.loads((tmp_path / "dp2.json").read_text())
    ref_weights = _weights(tmp_path / "dp1")
    for stage in (1, 2):
        torch.testing.assert_close(torch.tensor(result[f"zero{stage}"]), torch.tensor(reference), rtol=1e-5, atol=0)
        ours = _weights(tmp_path / f"zero{stage}")
        for name in ref_weights:
            torch.testing.assert_close(ours[name], ref_weights[name], rtol=1e-4, atol=1e-5)
    assert result["split_matrices"] > 0
    assert result["resumed"] == result["zero2"][2:]
    resumed, straight = _weights(tmp_path / "resumed"), _weights(tmp_path / "zero2")
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)


def _worker(args: dict) -> None:
    """Each rank: ZeRO-1 and ZeRO-2 runs, a ZeRO-2 crash after step 2 plus a resume, and the split-matrix count."""
    from tests.test_train_loop import _Crash, _CrashAfterCheckpoint

    torch.set_num_threads(1)
    out = Path(args["out"])
    inputs = {key: Path(args[key]) for key in ("corpus", "tokenizer")}
    result = {}
    for stage in (1, 2):
        result[f"zero{stage}"] = _losses(_train({**args["cfg"], "zero_stage": stage}, inputs, out / f"zero{stage}",
                                                model=SPLIT))
    try:
        _train({**args["cfg"], "zero_stage": 2}, inputs, out / "resumed", (_CrashAfterCheckpoint(2),), model=SPLIT)
    except _Crash:
        pass
    result["resumed"] = _losses(_train({**args["cfg"], "zero_stage": 2}, inputs, out / "resumed", model=SPLIT))
    model = K2ForCausalLM(SPLIT)
    built = build_engine(model, PretrainConfig(**{**args["cfg"], "zero_stage": 1}), with_schedule=False)
    result["split_matrices"] = sum(
        pieces.stop - pieces.start < partition.shapes[index].numel()
        for partition in built.optimizer._partitions.values() for index, pieces, _ in partition.local_pieces()
    )
    if torch.distributed.get_rank() == 0:
        (out / "dp2.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
