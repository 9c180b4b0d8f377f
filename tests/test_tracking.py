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


def test_stage_run_nests_under_parent_with_params_and_metric_history(store, monkeypatch):
    with open_run("pipeline", {"k2.stage": "pipeline"}, store) as parent:
        monkeypatch.setenv(PARENT_ENV, parent.run_id)
        with open_run("pretrain", {"k2.stage": "pretrain"}, store) as child:
            child.log_params({"lr": 0.01, "steps": 3})
            for step, loss in enumerate([3.0, 2.5, 2.0]):
                child.log_metrics({"loss": loss}, step=step)
        with open_run("bench/sft", {}, store, parent=child.run_id) as grandchild:
            pass
    client = child.client
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(grandchild.run_id).data.tags["mlflow.parentRunId"] == child.run_id
    assert run.data.params == {"lr": "0.01", "steps": "3"}
    assert [m.value for m in client.get_metric_history(child.run_id, "loss")] == [3.0, 2.5, 2.0]
    assert run.info.status == "FINISHED"


def test_a_published_checkpoint_is_a_registered_logged_model_that_loads_back_with_the_same_logits(store):
    """publish_checkpoint makes each checkpoint an MLflow 3 LoggedModel (transformers flavor) and a version of
    k2-<stage>; `models:/k2-sft/<v>` loads with plain transformers and gives the checkpoint's logits."""
    import mlflow
    import torch

    from k2core.model import K2ForCausalLM
    from k2core.storage import read_json, write_manifest
    from k2core.tracking.mlflow_tracker import RUN_RECORD
    from tasks.training import publish_checkpoint
    from tests.tiny_k2 import tiny_checkpoint

    export = tiny_checkpoint(store)
    write_manifest(export, "sft")
    published = store / "checkpoints" / "sft"
    with open_run("sft", {"k2.stage": "sft"}, store) as run:
        run.log_metrics({"train/loss": 2.5}, step=4)
        first = publish_checkpoint.fn("sft", export, published, run, step=4)
        second = publish_checkpoint.fn("sft", export, published, run, step=4)
    assert (first, second) == ("1", "2")
    record = read_json(published / RUN_RECORD)
    client = run.client
    model = client.get_logged_model(record["mlflow_model_id"])
    assert (model.source_run_id, model.name, model.status.name) == (run.run_id, "k2-sft", "READY")
    assert model.tags["k2.stage"] == "sft"
    assert [(m.key, m.value, m.step) for m in model.metrics] == [("train/loss", 2.5, 4)]  # the run's, at its step
    version = client.get_model_version("k2-sft", "2")
    assert (version.source, version.run_id) == (f"models:/{record['mlflow_model_id']}", run.run_id)

    mlflow.set_tracking_uri(client.tracking_uri)
    loaded = mlflow.transformers.load_model("models:/k2-sft/2", return_type="components")
    assert type(loaded["model"]).__name__ == "DeepseekV3ForCausalLM"
    ids = torch.tensor([loaded["tokenizer"].encode("the weather in Paris")])
    with torch.no_grad():
        ours = K2ForCausalLM.from_pretrained(published).eval()(ids).logits
        theirs = loaded["model"].eval()(ids).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_failed_stage_marks_run_failed(store):
    with pytest.raises(RuntimeError):
        with open_run("broken", {}, store) as tracker:
            raise RuntimeError("stage crashed")
    assert isinstance(tracker, MlflowTracker)
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"
