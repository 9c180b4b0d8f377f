"""The whole `ci` profile through `dvc repro` in a temporary copy of the repository.

Checks every stage's outputs and metrics, the MLflow record (one run per stage,
tags, registered checkpoints), that `k2 run` afterwards finds nothing stale and
prints the checkpoint table, and that a changed SFT param reruns sft, rl and
bench and nothing upstream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import layout
from flows.workspace import clone_workspace
from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory, prefect_api):
    work = tmp_path_factory.mktemp("pipeline") / "k2"
    work.mkdir()
    clone_workspace(REPO, work, profile="ci")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_api,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_PARENT_RUN_ID", None)
    return work, env


def _run(cmd: list[str], work: Path, env: dict[str, str], timeout: int = 1500) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return result


def _dvc(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], work, env)


@pytest.fixture(scope="module")
def reproduced(pipeline_env):
    work, env = pipeline_env
    _dvc(work, env, "repro")
    return work, env


def test_every_stage_wrote_its_outputs(reproduced):
    work, _ = reproduced
    for name in ("corpus", "math", "tool_tasks", "sft"):
        assert (work / layout.SYNTH_DIR / f"{name}.parquet").stat().st_size > 0
        assert (work / layout.VALIDATED_DIR / f"{name}.parquet").stat().st_size > 0
    assert (work / layout.TOKENIZER_DIR / "tokenizer.json").exists()
    for stage in layout.CHECKPOINT_STAGES:
        folder = work / layout.checkpoint_dir(stage)
        assert json.loads((folder / "config.json").read_text())["model_type"] == "deepseek_v3"
        assert (folder / "model.safetensors").stat().st_size > 0
        assert (folder / "tokenizer.json").exists()
    for stage in layout.STAGES:
        metrics = json.loads((work / layout.metrics_path(stage)).read_text())
        assert metrics["mlflow_run_id"]
    bench = json.loads((work / layout.metrics_path("bench")).read_text())
    for stage in layout.CHECKPOINT_STAGES:
        scores = bench[stage]
        assert scores["val_loss"] > 0 and scores["bits_per_byte"] > 0
        assert 0.0 <= scores["math_accuracy"] <= 1.0
        assert 0.0 <= scores["tool_pass1"] <= 1.0


def test_mlflow_has_a_tagged_run_per_stage_and_registered_checkpoints(reproduced):
    work, _ = reproduced
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("k2")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {run.data.tags["k2.stage"]: run for run in runs if run.data.tags["k2.stage"] != "pipeline"}
    assert set(by_stage) == set(layout.STAGES)
    for stage, run in by_stage.items():
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dvc.stage"] == stage and tags["k2.profile"] == "ci"
        assert len(tags["git.commit"]) >= 40 and tags["k2.params_hash"]
        assert tags["prefect.flow_run_id"]
    pretrain = by_stage["pretrain"]
    logged = set(client.get_run(pretrain.info.run_id).data.metrics)
    assert {"pretrain/loss", "pretrain/lr", "pretrain/tokens_per_s", "pretrain/max_logit",
            "pretrain/clipped_head_fraction", "pretrain/val_loss"} <= logged
    for stage in layout.CHECKPOINT_STAGES:
        versions = client.search_model_versions(f"name='k2-{stage}'")
        assert [v.run_id for v in versions] == [by_stage[stage].info.run_id]


def test_nothing_is_stale_after_repro_and_k2_run_prints_the_table(reproduced):
    work, env = reproduced
    status = _dvc(work, env, "status")
    assert "Data and pipelines are up to date" in status.stdout
    result = _run([sys.executable, "-m", "flows.cli", "run"], work, env)
    output = result.stdout + result.stderr
    for stage in layout.CHECKPOINT_STAGES:
        assert stage in output
    assert "mlflow_run_id" in output and "math_accuracy" in output


def test_changing_an_sft_param_reruns_only_downstream_stages(reproduced):
    work, env = reproduced
    params_file = work / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(_bump_sft_lr(original))
    assert yaml.safe_load(params_file.read_text())["sft"]["ci"]["lr"] == 2 * yaml.safe_load(original)["sft"]["ci"]["lr"]
    try:
        output = _dvc(work, env, "repro").stdout
    finally:
        params_file.write_text(original)
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"sft", "rl", "bench"}


def _bump_sft_lr(text: str) -> str:
    """Change `lr` inside the `sft.ci` block only (the file keeps its comments and anchors)."""
    lines = text.splitlines()
    section = profile = None
    for index, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line.split(":")[0]
        elif line.startswith("  ") and not line.startswith("    "):
            profile = line.strip().split(":")[0]
        elif section == "sft" and profile == "ci" and line.strip().startswith("lr:"):
            value = float(line.split(":", 1)[1])
            lines[index] = line.split("lr:")[0] + f"lr: {value * 2}"
            return "\n".join(lines) + "\n"
    raise AssertionError("params.yaml has no sft.ci.lr line to change")
