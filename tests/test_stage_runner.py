"""The stage runner: metrics file, tagged MLflow run, plots; non-zero ranks record nothing."""

import json
import shutil

import pytest

from flows.stage_runner import run_stage
from k2core.tracking import InMemoryTracker
from k2core.tracking.mlflow_tracker import PARENT_ENV
from tests.conftest import REPO


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return tmp_path


def _body(configs, tracker):
    for step in range(3):
        tracker.log_metrics({"tokenizer/loss": 3.0 - step}, step=step)
    return {"vocab_size": configs["tokenizer"].vocab_size, "nested": {"rows": 5}}


def test_primary_rank_writes_metrics_plots_and_a_tagged_run(project):
    metrics = run_stage("tokenizer", _body, project)
    written = json.loads((project / "metrics/tokenizer.json").read_text())
    assert written == metrics and written["vocab_size"] == 4096 and written["mlflow_run_id"]
    assert (project / "plots/tokenizer/metrics.csv").read_text().splitlines()[0] == "step,tokenizer/loss"
    assert (project / "plots/tokenizer/curves.png").stat().st_size > 0
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(written["mlflow_run_id"])
    assert run.data.tags["k2.stage"] == "tokenizer" and run.data.tags["k2.profile"] == "tiny"
    assert run.data.params["tokenizer.vocab_size"] == "4096"
    assert run.data.metrics["nested/rows"] == 5.0


def test_other_ranks_run_the_body_but_record_nothing(project, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    seen = []

    def body(configs, tracker):
        seen.append(tracker)
        return {"ok": 1}

    assert run_stage("tokenizer", body, project) == {"ok": 1}
    assert isinstance(seen[0], InMemoryTracker)
    assert not (project / "metrics").exists() and not (project / "mlflow.db").exists()
