"""A stage run lists the datasets it read as MLflow inputs, named by path, with DVC's hashes and their sources."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from flows.lineage import data_deps, input_context, input_model_ids, stage_datasets
from flows.stage_runner import run_stage
from flows.workspace import clone_workspace
from k2core.storage import write_json
from k2core.tracking.mlflow_tracker import PARENT_ENV, RUN_RECORD, open_run
from tests.conftest import REPO


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = clone_workspace(REPO, tmp_path_factory.mktemp("lineage") / "work", profile="tiny")
    (work / "data/validated").mkdir(parents=True)
    pd.DataFrame({"doc_id": ["a", "b"], "text": ["one", "two"]}).to_parquet(work / "data/validated/corpus.parquet")
    pd.DataFrame({"messages": ["[]"]}).to_parquet(work / "data/validated/sft.parquet")
    (work / "artifacts/tokenizer").mkdir(parents=True)
    (work / "artifacts/tokenizer/tokenizer.json").write_text("{}")
    (work / "checkpoints/pretrain").mkdir(parents=True)
    (work / "checkpoints/pretrain/config.json").write_text("{}")
    return work


@pytest.fixture
def env(monkeypatch, workspace):
    monkeypatch.chdir(workspace)
    for name in ("MLFLOW_TRACKING_URI", PARENT_ENV, "RANK"):
        monkeypatch.delenv(name, raising=False)
    return workspace


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_data_deps_are_other_stages_outputs_and_outside_files_never_code(workspace):
    assert data_deps(workspace, "sft") == ["checkpoints/pretrain", "data/validated/sft.parquet", "artifacts/tokenizer"]
    assert data_deps(workspace, "synth") == ["../shared/data/mcp-servers/servers.jsonl"]
    assert [input_context(s) for s in ("synth", "validate", "sft", "bench")] == [
        "synthesis", "training", "training", "evaluation"]


def test_a_stage_run_lists_its_datasets_with_their_dvc_hashes(env):
    work = env

    def body(configs, tracker):
        (work / "artifacts/tokenizer/vocab.json").write_text("{}")  # the stage's output, for DVC's lock entry
        return {"ok": 1}

    metrics = run_stage("tokenizer", body, work)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").get_run(metrics["mlflow_run_id"])
    corpus = work / "data/validated/corpus.parquet"
    listed = [(i.dataset.name, i.dataset.digest, i.dataset.source_type, json.loads(i.dataset.source)["uri"],
               {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in run.inputs.dataset_inputs]
    assert listed == [("data/validated/corpus.parquet", _md5(corpus), "local", str(corpus), "training")]
    assert json.loads(run.inputs.dataset_inputs[0].dataset.profile) == {"size": corpus.stat().st_size}
    lock = Path(MlflowClient(f"sqlite:///{work / 'mlflow.db'}").download_artifacts(
        run.info.run_id, "provenance/dvc_stage.json"))  # the lock entry DVC writes: the same hash
    assert {d["path"]: d["md5"] for d in json.loads(lock.read_text())["deps"]}[corpus.relative_to(work).as_posix()] \
        == _md5(corpus)


def test_folders_hash_as_dvc_dirs_sources_follow_the_storage_root_and_checkpoints_name_their_model(env):
    work = env
    datasets = {d.name: d for d in stage_datasets(work, "sft", "s3://k2-store/prefix")}
    assert set(datasets) == {"checkpoints/pretrain", "data/validated/sft.parquet", "artifacts/tokenizer"}
    sft = datasets["data/validated/sft.parquet"]
    assert (sft.digest, sft.source) == (_md5(work / sft.name), "s3://k2-store/prefix/data/validated/sft.parquet")
    folder = datasets["checkpoints/pretrain"]
    assert folder.digest.endswith(".dir") and folder.profile["nfiles"] == 1
    (work / "checkpoints/pretrain/config.json").write_text('{"changed": true}')
    assert next(d for d in stage_datasets(work, "sft", None) if d.name == folder.name).digest != folder.digest

    with open_run("pretrain", {}, work) as producer:
        model_id = producer.new_model("pretrain")
    write_json({"stage": "pretrain", "mlflow_run_id": producer.run_id, "mlflow_model_id": model_id},
               work / "checkpoints/pretrain" / RUN_RECORD)
    assert input_model_ids(work, "sft") == [model_id]
    with open_run("sft", {}, work) as consumer:
        consumer.log_inputs(list(datasets.values()), "training", [model_id, "m-not-in-this-store"])
    inputs = consumer.client.get_run(consumer.run_id).inputs
    assert [m.model_id for m in inputs.model_inputs] == [model_id]
    assert {i.dataset.name for i in inputs.dataset_inputs} == set(datasets)
