"""MLflow tracking against a real sqlite store: nesting, tags, metrics, registered checkpoints."""

import pytest

from k2core.tracking import InMemoryTracker, Tracker
from k2core.tracking.mlflow_tracker import PARENT_ENV, MlflowTracker, open_run


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    return tmp_path


def test_both_trackers_satisfy_the_protocol(store):
    with open_run("probe", {}, store) as tracker:
        assert isinstance(tracker, Tracker)
    assert isinstance(InMemoryTracker(), Tracker)


def test_stage_run_nests_under_parent_and_registers_checkpoint(store, monkeypatch):
    checkpoint = store / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    with open_run("pipeline", {"k2.stage": "pipeline"}, store) as parent:
        monkeypatch.setenv(PARENT_ENV, parent.run_id)
        with open_run("pretrain", {"k2.stage": "pretrain"}, store) as child:
            child.log_params({"lr": 0.01, "steps": 3})
            for step, loss in enumerate([3.0, 2.5, 2.0]):
                child.log_metrics({"loss": loss}, step=step)
            child.log_artifact(checkpoint, "checkpoint")
            first = child.register_checkpoint("checkpoint", "k2-test")
            second = child.register_checkpoint("checkpoint", "k2-test")
    assert (first, second) == ("1", "2")
    client = child.client
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params == {"lr": "0.01", "steps": "3"}
    assert [m.value for m in client.get_metric_history(child.run_id, "loss")] == [3.0, 2.5, 2.0]
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(child.run_id, "checkpoint")] == ["checkpoint/config.json"]


def test_failed_stage_marks_run_failed(store):
    with pytest.raises(RuntimeError):
        with open_run("broken", {}, store) as tracker:
            raise RuntimeError("stage crashed")
    assert isinstance(tracker, MlflowTracker)
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"
