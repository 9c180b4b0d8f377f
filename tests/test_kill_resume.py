"""SIGKILL the real training stage processes and resume them: the weights end bitwise equal to an uninterrupted run.

Each of `k2 stage pretrain`, `sft` and `rl` (the command DVC runs) runs in a temporary copy of the repository on the
`ci` profile, first uninterrupted for the reference weights, then as one chain from an empty resume folder: start,
SIGKILL, start again, ... at least five kills, then a run that completes. Kills come from `K2_FAULT` crash points
(k2core/faults.py: the process SIGKILLs itself during a training step, between writing a checkpoint and committing
it, before and after swapping in the published folder) and from this test at a seeded random moment after training
started. After every kill the published folder still holds complete reference weights, and every run's logged steps
show it resumed from the last committed checkpoint: exactly the steps after it, once.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flows import layout
from flows.workspace import clone_workspace
from k2core.config import load_params
from k2core.faults import ENV, parse_fault
from tests.conftest import REPO

SEED = 8
# A kill from this test at a seeded random moment once the run has finished its first step (iteration for RL), so
# that it lands in training after the resume rather than in start-up (see _killed).
TIMED = None
TIMED_DELAY_S = (0.0, 0.3)
# One chain per stage; each fault must be reachable from any state the kills before it can leave. DeepSpeed stages
# (ci: checkpoints at the half and the end): in step 2 (nothing committed), in the second save (the half committed,
# the end written but not committed), at a random moment after the first step from the half, then with the new
# published folder complete but not swapped in, and swapped in but not yet registered in MLflow.
CHAINS: dict[str, list[str | None]] = {
    "pretrain": ["step:2", "save:2", TIMED, "publish:1", "publish:2"],
    "sft": ["step:2", "save:2", TIMED, "publish:1", "publish:2"],
    # RL (ci: 3 iterations, a state after each): in the second save (iteration 0 committed, iteration 1's state
    # written but not renamed into place), in iteration 1's inner step, at a random moment after iteration 1 (by then
    # 2 committed), and the two publishing points.
    "rl": ["save:2", "step:1", TIMED, "publish:1", "publish:2"],
}
UPSTREAM = {"pretrain": (), "sft": ("pretrain",), "rl": ("pretrain", "sft")}  # in run order
# the metric each training step/iteration logs, and the first step number (DeepSpeed steps 1-based, RL 0-based)
LOGGED = {"pretrain": ("train/loss", 1), "sft": ("train/loss", 1), "rl": ("train/loss", 0)}


def test_crash_point_sigkills_the_process_at_the_named_arrival(tmp_path: Path) -> None:
    code = ("from k2core.faults import crash_point\n"
            "for i in range(3):\n    crash_point('step'); crash_point('save'); print(i, flush=True)\n")
    env = {**os.environ, ENV: "save:2"}
    killed = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout.split() == ["0"]
    env.pop(ENV)
    normal = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert normal.returncode == 0 and normal.stdout.split() == ["0", "1", "2"]


def test_a_malformed_fault_is_one_clear_error() -> None:
    assert parse_fault("publish:2") == ("publish", 2)
    for spec in ("save", "save:0", "save:x", "eval:1"):
        with pytest.raises(ValueError, match=rf"{ENV}='{spec}': expected NAME:N"):
            parse_fault(spec)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> tuple[Path, dict[str, str]]:
    """A `ci` copy of the repository with the validated data and tokenizer the training stages read."""
    work = tmp_path_factory.mktemp("kill") / "k2"
    work.mkdir()
    clone_workspace(REPO, work, profile="ci")
    # Own kernel cache: the shared one is rebuilt whenever a run from another copy of the sources used it last, and a
    # process killed by another test while holding its build lock would hang every later build.
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "K2_KERNELS_CACHE": str(work.parent / "kernels")}
    for name in (ENV, "MLFLOW_TRACKING_URI", "MLFLOW_PARENT_RUN_ID"):
        env.pop(name, None)
    for stage in ("synth", "validate", "tokenizer"):
        _complete(work, env, stage)
    return work, env


def _command(stage: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "stage", stage]


def _log(work: Path, stage: str) -> Path:
    return work / "logs" / f"{stage}-{time.monotonic_ns()}.log"


def _complete(work: Path, env: dict[str, str], stage: str) -> None:
    log = _log(work, stage)
    log.parent.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        result = subprocess.run(_command(stage), cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=900)
    assert result.returncode == 0, f"k2 stage {stage} failed:\n{log.read_text()[-6000:]}"


def _killed(work: Path, env: dict[str, str], stage: str, fault: str | None, rng: random.Random, committed: int
            ) -> str:
    """Run the stage until it is SIGKILLed (by its crash point, or by this test); returns where it was killed.

    A timed kill waits until the progress bar passes `committed` (this run's first step is done): start-up is not
    what this test is about, and a SIGKILL while torch's JIT loader holds its plain lock file (DeepSpeed's shm op at
    engine start) leaves the file behind, so that every later process would wait for it forever.
    """
    log = _log(work, stage)
    log.parent.mkdir(exist_ok=True)
    run_env = env if fault is None else {**env, ENV: fault}
    with open(log, "wb") as out:
        process = subprocess.Popen(_command(stage), cwd=work, env=run_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        if fault is None:
            bar = re.compile(rf"{stage}:\s+\d+%\|[^|]*\|\s*(\d+)/\d+")
            while process.poll() is None and max(map(int, bar.findall(log.read_text(errors="replace"))),
                                                 default=0) <= committed:
                time.sleep(0.02)
            delay = rng.uniform(*TIMED_DELAY_S)
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            where = f"{delay:.2f}s after its first step"
        else:
            where = fault
        returncode = process.wait(timeout=900)
    finally:
        try:  # children of the killed process (RL's math-verify worker) must not outlive the test
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    assert returncode == -signal.SIGKILL, f"k2 stage {stage} ({where}) was not killed:\n{log.read_text()[-6000:]}"
    return where


def _published_weights(work: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(work / layout.checkpoint_dir(stage) / "model.safetensors")


def _record(work: Path, stage: str) -> str:
    """The MLflow run that published the stage's checkpoint folder."""
    return json.loads((work / layout.checkpoint_dir(stage) / "k2_run.json").read_text())["mlflow_run_id"]


def _committed(work: Path, stage: str) -> int:
    """Steps (iterations for RL) the stage's last committed checkpoint holds; 0 without one."""
    resume = work / layout.resume_dir(stage)
    if stage == "rl":
        state = resume / "rl_state.pt"
        return int(torch.load(state, weights_only=True)["iteration"]) if state.exists() else 0
    latest = resume / "ds" / "latest"
    return int(latest.read_text().removeprefix("step")) if latest.exists() else 0


def _stage_runs(work: Path, stage: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("k2")
    runs = client.search_runs([experiment.experiment_id], f"tags.`k2.stage` = '{stage}'",
                              order_by=["attributes.start_time ASC"])
    return [(run.info.run_id, sorted(m.step for m in client.get_metric_history(run.info.run_id, LOGGED[stage][0])))
            for run in runs]


def _total(work: Path, stage: str) -> int:
    section = load_params(work / "params.yaml").section(stage)
    return section.iterations if stage == "rl" else section.steps


def _assert_equal(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], when: str) -> None:
    assert set(got) == set(expected), when
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{when}: tensors differ from the uninterrupted run: {different[:5]}"


@pytest.mark.integration
@pytest.mark.parametrize("stage", list(CHAINS))
def test_stage_killed_again_and_again_resumes_to_the_same_weights(workspace, stage: str) -> None:
    """Reference run, then a chain of SIGKILLed runs from an empty resume folder and one that completes."""
    work, env = workspace
    for upstream in UPSTREAM[stage]:
        if not (work / layout.checkpoint_dir(upstream) / "model.safetensors").exists():
            _complete(work, env, upstream)
    resume = work / layout.resume_dir(stage)
    total, (_, first) = _total(work, stage), LOGGED[stage]

    _complete(work, env, stage)
    reference = _published_weights(work, stage)
    assert _stage_runs(work, stage)[-1][1] == list(range(first, total + first))

    shutil.rmtree(resume)
    rng = random.Random(f"{SEED}-{stage}")
    kills = []
    for fault in [*CHAINS[stage], "complete"]:
        committed, record_before = _committed(work, stage), _record(work, stage)
        runs_before = len(_stage_runs(work, stage))
        if fault == "complete":
            _complete(work, env, stage)
        else:
            kills.append((_killed(work, env, stage, fault, rng, committed), committed))
        runs = _stage_runs(work, stage)
        assert len(runs) == runs_before + 1, f"{fault}: the stage opened no MLflow run"
        run_id, steps = runs[-1]
        # resumed from the last committed checkpoint: the steps after it, each once, and no earlier one
        assert steps == list(range(committed + first, committed + first + len(steps))), (fault, committed, steps)
        if fault in ("publish:1", "publish:2", "complete"):  # these runs trained through to the end
            assert steps == list(range(committed + first, total + first)), (fault, committed, steps)
        assert _committed(work, stage) >= committed
        _assert_equal(reference, _published_weights(work, stage), f"after {fault}")
        if fault == "publish:1":  # killed with the new folder complete but not swapped in: the old one stays
            assert _record(work, stage) == record_before
        if fault in ("publish:2", "complete"):  # swapped in
            assert _record(work, stage) == run_id
    assert len(kills) >= 5
    assert any(committed > 0 for _, committed in kills), "no rerun started from a committed checkpoint"
    print(f"\n{stage} kills (where, committed steps before the run): {kills}")
