"""A stage with `storage.root` on S3 (moto on 127.0.0.1, behind a fault-injecting proxy): inputs fetched, outputs
and MLflow artifacts published, faults retried, a persistent fault failing the stage with nothing published."""

import json
import shutil

import pytest
import yaml

from flows.publishing import stage_inputs, stage_outputs
from flows.stage_runner import run_stage
from k2core.storage.publish import PUBLISHED, publish_path, read_manifest
from k2core.storage.root import StorageError, root_filesystem
from k2core.tracking.mlflow_tracker import PARENT_ENV
from tests.conftest import REPO
from tests.s3_testing import FaultPlan, FaultProxy, moto_with_bucket

BUCKET = "k2-stage"


@pytest.fixture(scope="module")
def moto():
    with moto_with_bucket(BUCKET, None) as address:
        yield address


def make_project(folder, root: str):
    """params.yaml (ci profile, storage.root set, few attempts), dvc.yaml of the repository and a local
    data/validated, in `folder`."""
    folder.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "ci"
    params["storage"]["ci"] = {"root": root, "retries": {"max_attempts": 4, "connect_timeout_s": 2,
                                                         "read_timeout_s": 10}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(REPO / "dvc.yaml", folder / "dvc.yaml")
    (folder / "data/validated").mkdir(parents=True)  # the tokenizer's input, present locally
    (folder / "data/validated/part.bin").write_bytes(b"local")
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch, moto):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with FaultProxy(*moto) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        root = f"s3://{BUCKET}/{tmp_path.name}"
        yield make_project(tmp_path / "repo", root), root, proxy


def tokenizer_body(project):
    def body(configs, tracker):
        out = project / "artifacts" / "tokenizer"
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer.json").write_text(json.dumps({"vocab": configs["tokenizer"].vocab_size}))
        (out / "merges.bin").write_bytes(bytes(range(256)) * 400)
        tracker.log_metrics({"tokenizer/loss": 1.0}, step=0)
        return {"vocab_size": configs["tokenizer"].vocab_size}
    return body


def test_outputs_and_inputs_come_from_dvc_yaml():
    assert stage_outputs("validate", REPO) == ["data/validated", "data/quarantine", "metrics/validate.json"]
    assert "checkpoints/resume/sft" not in stage_outputs("sft", REPO)
    assert stage_inputs("sft", REPO) == ["checkpoints/pretrain", "data/validated", "artifacts/tokenizer"]


def test_stage_survives_transient_faults_and_publishes_identical_outputs(project):
    from mlflow.tracking import MlflowClient

    folder, root, proxy = project
    proxy.plan = FaultPlan(every=3)
    metrics = run_stage("tokenizer", tokenizer_body(folder), folder)
    assert len(proxy.plan.faults) >= 4, proxy.plan.faults
    proxy.plan = FaultPlan()
    fs, _ = root_filesystem(root, None)
    manifest = read_manifest(f"{root}/artifacts/tokenizer", None)
    for name, entry in manifest["files"].items():
        got = fs.cat_file(f"{root}/artifacts/tokenizer/v-{manifest['version']}/{name}".removeprefix("s3://"))
        assert got == (folder / "artifacts/tokenizer" / name).read_bytes()
    name = "metrics/tokenizer.json"
    assert fs.cat_file(f"{root}/{name}".removeprefix("s3://")) == (folder / name).read_bytes()

    run = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["k2.storage.root"] == root
    assert run.info.artifact_uri.startswith(f"{root}/mlartifacts/")
    logged = run.info.artifact_uri.removeprefix("s3://") + "/metrics/tokenizer.json"
    assert fs.cat_file(logged) == (folder / "metrics/tokenizer.json").read_bytes()


def test_a_persistent_fault_fails_the_stage_and_publishes_nothing(project):
    from mlflow.tracking import MlflowClient

    folder, root, proxy = project
    run_stage("tokenizer", lambda configs, tracker: {"warm": 1}, folder)  # experiment and bucket reachable
    proxy.plan = FaultPlan(persistent=True, methods=("PUT",))
    with pytest.raises(StorageError, match="failed after") as failure:  # MLflow's upload or the publish
        run_stage("tokenizer", tokenizer_body(folder), folder)
    assert "\n" not in str(failure.value) and root in str(failure.value)
    proxy.plan = FaultPlan()
    assert read_manifest(f"{root}/artifacts/tokenizer", None) is None
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("k2").experiment_id], order_by=["start_time DESC"])
    assert runs[0].info.status == "FAILED"


def test_missing_inputs_are_fetched_from_the_storage_root(project, tmp_path):
    folder, root, _ = project
    upstream = tmp_path / "upstream"
    for name in ("data/validated", "artifacts/tokenizer"):
        (upstream / name).mkdir(parents=True)
        (upstream / name / "part.bin").write_bytes(name.encode() * 1000)
        publish_path(upstream, name, root, None)
    seen = {}

    def body(configs, tracker):
        seen.update({name: (folder / name / "part.bin").read_bytes() for name in ("data/validated",
                                                                                  "artifacts/tokenizer")})
        return {}

    run_stage("pretrain", body, folder)  # its inputs: data/validated (a file of it) and artifacts/tokenizer
    assert seen == {"data/validated": b"local", "artifacts/tokenizer": b"artifacts/tokenizer" * 1000}
    assert PUBLISHED not in {p.name for p in (folder / "artifacts/tokenizer").iterdir()}
