"""A stage's MLflow run records the dependency and output hashes DVC writes to dvc.lock after that very run (not the
previous run's lock): a tiny real DVC project whose stage command is `run_stage` with a small body, reproduced twice
by the real `dvc repro`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.provenance import DVC_STAGE_ARTIFACT
from k2core.tracking.mlflow_tracker import PARENT_ENV
from tests.conftest import REPO

_DVC_YAML = """
stages:
  tokenizer:
    cmd: {python} stage.py
    deps: [corpus.txt, src]
    params: [profile, "tokenizer.${{profile}}"]
    outs: [artifacts/tokenizer]
    metrics: [{{metrics/tokenizer.json: {{cache: false}}}}]
    plots: [{{plots/tokenizer/metrics.csv: {{cache: false}}}}]
"""

_STAGE = """
from pathlib import Path
from flows.stage_runner import run_stage

def body(configs, tracker):
    text = Path("corpus.txt").read_text()
    out = Path("artifacts/tokenizer/sub")
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "vocab.txt").write_text(" ".join(sorted(set(text.split()))))
    (out / "size.txt").write_text(str(len(text)))
    tracker.log_metrics({"tokenizer/chars": float(len(text))}, step=0)
    return {"chars": len(text)}

run_stage("tokenizer", body, Path.cwd())
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _repro(root: Path, env: dict[str, str]) -> tuple[dict, dict, dict]:
    """`dvc repro`, then (the lock entry DVC wrote, the entry the stage's MLflow run logged, that run's tags)."""
    done = subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    from mlflow.tracking import MlflowClient

    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["tokenizer"]
    run_id = json.loads((root / "metrics/tokenizer.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    logged = json.loads(Path(client.download_artifacts(run_id, DVC_STAGE_ARTIFACT, str(root / "tmp"))).read_text())
    return lock, logged, client.get_run(run_id).data.tags


@pytest.mark.integration
def test_run_logs_the_hashes_dvc_writes_after_it(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(_DVC_YAML.format(python=sys.executable))
    (root / "stage.py").write_text(_STAGE)
    (root / "corpus.txt").write_text("the cat sat on the mat\n")
    (root / "src").mkdir()
    (root / "src/rules.txt").write_text("split on spaces\n")
    (root / ".gitignore").write_text("/tmp/\nmlflow.db\nmlartifacts/\n")
    _git(root, "init", "-q")
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=root, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", PARENT_ENV, "RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])

    first_lock, first_logged, first_tags = _repro(root, env)
    assert first_logged == first_lock
    out = {o["path"]: o for o in first_lock["outs"]}
    assert out["artifacts/tokenizer"]["md5"].endswith(".dir") and out["artifacts/tokenizer"]["nfiles"] == 2
    assert first_tags["dvc.out.artifacts/tokenizer"] == out["artifacts/tokenizer"]["md5"]
    assert first_tags["dvc.out.metrics/tokenizer.json"] == out["metrics/tokenizer.json"]["md5"]

    (root / "corpus.txt").write_text("a dog and a log\n")  # new input, so new deps and outs
    second_lock, second_logged, second_tags = _repro(root, env)
    assert second_logged == second_lock  # this run's hashes, not the lock the previous run left
    assert second_lock["deps"] != first_lock["deps"] and second_lock["outs"] != first_lock["outs"]
    assert second_tags["dvc.deps_digest"] != first_tags["dvc.deps_digest"]
    assert second_tags["dvc.outs_digest"] != first_tags["dvc.outs_digest"]
