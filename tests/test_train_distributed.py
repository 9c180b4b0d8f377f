"""Data-parallel MuonClip under DeepSpeed: the launcher's config, 1 vs 2 ranks, accumulation, checkpoint round trip.

The 2-rank test starts this file as a worker through the deepspeed launcher (`python -m deepspeed.launcher.runner
--num_gpus 2`, which starts CPU ranks when DS_ACCELERATOR=cpu; they join over gloo).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from k2core.config import load_params
from k2core.model import K2Config, K2ForCausalLM
from k2core.optim import apply_qk_clip, muon_param_groups
from k2core.optim.qk_clip import step_max_logits
from k2core.tracking import InMemoryTracker
from k2core.train import Callback, PretrainConfig, build_engine, deepspeed_config, pretrain
from tests.test_train_data import build_tokenizer, corpus_frame
from tests.test_train_loop import MODEL, _Crash, _CrashAfterCheckpoint, loop_config

ROOT = Path(__file__).resolve().parents[1]
DP_RUN = dict(steps=4, gradient_accumulation=2, qk_clip_tau=0.002, eval_every=4, checkpoint_every=2)
DENSE = MODEL.model_copy(update={"first_k_dense_replace": MODEL.num_hidden_layers})


def _losses(tracker: InMemoryTracker) -> list[float]:
    return [value for _, value in tracker.metrics["train/loss"]]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return K2ForCausalLM.from_pretrained(out / "hf").state_dict()


def _train(cfg: dict, inputs: dict[str, Path], out: Path, callbacks: tuple[Callback, ...] = (),
           model: K2Config = MODEL) -> InMemoryTracker:
    tracker = InMemoryTracker()
    pretrain(model, PretrainConfig(**cfg), inputs["corpus"], inputs["tokenizer"], out, tracker, callbacks)
    return tracker


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    corpus_frame(80).to_parquet(root / "corpus.parquet")
    return {"tokenizer": build_tokenizer(root / "tok"), "corpus": root / "corpus.parquet"}


def test_small_profile_deepspeed_config_is_what_the_launcher_uses():
    cfg = load_params(ROOT / "params.yaml", profile="small").section("pretrain")
    gpu = deepspeed_config(cfg, bf16=True)
    assert gpu["train_micro_batch_size_per_gpu"] == cfg.micro_batch_size == 16
    assert gpu["gradient_accumulation_steps"] == cfg.gradient_accumulation == 4
    assert gpu["gradient_clipping"] == cfg.gradient_clipping == 1.0
    assert gpu["zero_optimization"] == {"stage": 1} and gpu["zero_allow_untested_optimizer"]  # k2's Muon, bound
    assert gpu["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    assert "bf16" not in gpu and "fp16" not in gpu and "optimizer" not in gpu  # fp32 master = the weights, k2's Muon
    assert "torch_autocast" not in deepspeed_config(cfg, bf16=False)
    from deepspeed.launcher.runner import fetch_hostfile

    hosts = fetch_hostfile(str(ROOT / "configs" / "hostfile.example"))
    assert list(hosts.values()) == [8, 8]  # the documented 2 x 8-GPU launch: global batch 16 * 4 * 16 sequences


@pytest.mark.parametrize("bf16", [False, True])
def test_qk_clip_reaches_the_weights_the_engine_steps(bf16):
    """A clip followed by an lr = 0 step keeps the clipped weights: no master copy restores the pre-clip values."""
    torch.manual_seed(0)
    model = K2ForCausalLM(MODEL)
    built = build_engine(model, PretrainConfig(**loop_config(gradient_accumulation=1)), with_schedule=False, bf16=bf16)
    engine, optimizer = built.engine, built.optimizer
    ids = torch.randint(0, MODEL.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    tau = float(torch.cat(step_max_logits(model)).min()) / 2
    assert apply_qk_clip(model, tau)["clipped_fraction"] == 1.0
    clipped = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert all(p.dtype == torch.float32 for p in clipped.values())
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), clipped[name]), name


def test_accumulating_4_micro_batches_of_1_equals_one_micro_batch_of_4(inputs, tmp_path):
    single = loop_config(steps=3, micro_batch_size=4, gradient_accumulation=1, qk_clip_tau=0.05, eval_every=3,
                         checkpoint_every=3)
    accumulated = {**single, "micro_batch_size": 1, "gradient_accumulation": 4}
    losses_1x4 = _losses(_train(single, inputs, tmp_path / "1x4"))
    losses_4x1 = _losses(_train(accumulated, inputs, tmp_path / "4x1"))
    torch.testing.assert_close(torch.tensor(losses_4x1), torch.tensor(losses_1x4), rtol=1e-5, atol=0)
    ours, ref = _weights(tmp_path / "4x1"), _weights(tmp_path / "1x4")
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_ranks(script: Path, payload: dict, ranks: int = 2) -> None:
    """Run `script` (which reads `payload` from argv[1]) on `ranks` CPU ranks (gloo) through the deepspeed launcher."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks), "--master_port",
               str(_free_port()), "--no_local_rank", str(script), json.dumps(payload)]
    launcher = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    try:
        assert launcher.wait(timeout=300) == 0
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and every rank
        raise


@pytest.mark.multiproc
def test_two_ranks_match_one_rank_and_resume_exactly(inputs, tmp_path):
    """2 ranks x micro-batch 1 see the samples of 1 rank x micro-batch 2: same losses and weights (rtol 1e-5 on the
    losses, 1e-4 on the weights: only the all-reduce's summation order differs). A 2-rank run that crashes after
    its step-2 checkpoint and resumes ends bitwise equal to the uninterrupted 2-rank run.

    The model is dense; tests/test_train_moe_distributed.py runs this comparison with every layer routed and checks it
    decision by decision. No flip happens in 4 steps; on long runs rounding growth eventually flips one
    (docs/distributed.md)."""
    tracker = _train(loop_config(**DP_RUN), inputs, tmp_path / "dp1", model=DENSE)
    reference = _losses(tracker)
    assert all(fraction > 0 for _, fraction in tracker.metrics["train/clipped_head_fraction"])
    args = {"cfg": loop_config(micro_batch_size=1, **DP_RUN), "out": str(tmp_path),
            **{key: str(path) for key, path in inputs.items()}}
    launch_ranks(Path(__file__), args)
    result = json.loads((tmp_path / "dp2.json").read_text())
    torch.testing.assert_close(torch.tensor(result["straight"]), torch.tensor(reference), rtol=1e-5, atol=0)
    ours, ref = _weights(tmp_path / "straight"), _weights(tmp_path / "dp1")
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5)
    assert result["resumed"] == result["straight"][2:]
    resumed = _weights(tmp_path / "resumed")
    assert all(torch.equal(resumed[name], ours[name]) for name in ours)
    assert result["smax_is_global_max"]
    muon_state = torch.load(tmp_path / "resumed" / "ds" / "step4" / "mp_rank_00_model_states.pt",
                            weights_only=False)["optimizer"]["state"]
    assert sum("momentum_buffer" in s for s in muon_state.values()) == result["muon_matrices"] > 0


def _worker(args: dict) -> None:
    """Each rank: a straight run, a crash after step 2 plus a resume, and a check of the S_max all-reduce."""
    torch.set_num_threads(1)
    out = Path(args["out"])
    inputs = {key: Path(args[key]) for key in ("corpus", "tokenizer")}
    straight = _losses(_train(args["cfg"], inputs, out / "straight", model=DENSE))
    try:
        _train(args["cfg"], inputs, out / "resumed", (_CrashAfterCheckpoint(2),), model=DENSE)
    except _Crash:
        pass
    resumed = _losses(_train(args["cfg"], inputs, out / "resumed", model=DENSE))
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    model = K2ForCausalLM(DENSE).train()
    ids = torch.randint(0, DENSE.vocab_size, (1, 16), generator=torch.Generator().manual_seed(rank))
    model(ids)
    local = torch.cat([m.max_logit for m in model.modules() if hasattr(m, "max_logit")])
    gathered = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(gathered, local)
    smax_ok = torch.equal(torch.cat(step_max_logits(model)), torch.stack(gathered).amax(0))
    muon = sum(len(g["params"]) for g in muon_param_groups(model, 1.0, 0.0) if g["use_muon"])
    if rank == 0:
        (out / "dp2.json").write_text(json.dumps({"straight": straight, "resumed": resumed, "muon_matrices": muon,
                                                  "smax_is_global_max": smax_ok and not torch.equal(*gathered)}))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))


def test_a_lock_left_by_a_killed_deepspeed_op_build_does_not_hang_the_next_run(tmp_path):
    """torch's plain build-lock file, left when a process is SIGKILLed while DeepSpeed JIT-builds its CPU
    shared-memory op, would make every later `deepspeed.initialize` wait forever."""
    script = (
        "import deepspeed.ops\n"
        "from pathlib import Path\n"
        "from deepspeed.accelerator import get_accelerator\n"
        "from torch.utils.cpp_extension import _get_build_directory\n"
        "from k2core.train.distributed import build_deepspeed_comm_op\n"
        "builder = get_accelerator().create_op_builder('ShareMemCommBuilder')\n"
        "assert builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME)\n"
        "folder = Path(_get_build_directory(builder.name, verbose=False))\n"
        "folder.mkdir(parents=True, exist_ok=True)\n"
        "lock = folder / 'lock'\n"
        "lock.write_text('')  # what a build killed by SIGKILL leaves\n"
        "build_deepspeed_comm_op()\n"
        "assert builder.name in type(builder)._loaded_ops and not lock.exists()\n"
        "print('built')\n"
    )
    # A build folder of its own: a fake lock in the shared one would stall (or be taken for) a real build elsewhere.
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("built"), result.stdout + result.stderr
