"""The `ci` pipeline with everything on S3 (moto on 127.0.0.1, behind a proxy failing every Nth request): storage
root, DVC remote and MLflow artifacts. Then `dvc push`, a fresh clone's `dvc pull` (byte-identical outputs), a
published checkpoint loaded straight from S3, and secrets found nowhere the run wrote."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from flows import layout
from flows.publishing import stage_outputs
from flows.workspace import clone_workspace
from k2core.storage.publish import PUBLISHED, read_manifest
from k2core.storage.root import root_filesystem
from tests.conftest import REPO
from tests.s3_testing import FaultPlan, FaultProxy, moto_server

pytestmark = pytest.mark.integration

STORE, CACHE = "k2-ci-store", "k2-ci-dvc"
ROOT = f"s3://{STORE}/run"
# Secrets a user may well have exported: no log, MLflow param or tag, Prefect parameter or artifact may hold them.
# Made at run time, so that no source file (copied into the workspace) holds them.
CANARIES = {"AWS_SECRET_ACCESS_KEY": f"canary-aws-{uuid.uuid4().hex}", "OPENAI_API_KEY": f"sk-canary-{uuid.uuid4().hex}"}
FAULT_EVERY = 25


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    return {**env, **CANARIES, "AWS_ACCESS_KEY_ID": "k2-ci-key", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint}


def _sh(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 1500) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def _dvc(*args: str) -> list[str]:
    return [str(REPO / ".venv" / "bin" / "dvc"), *args]


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory):
    """`k2 run` on the ci profile with storage.root, the DVC remote and MLflow artifacts on S3; `dvc push`."""
    base = tmp_path_factory.mktemp("s3pipe")
    work = base / "k2"
    work.mkdir()
    clone_workspace(REPO, work, profile="ci")
    params = yaml.safe_load((work / "params.yaml").read_text())
    assert params["storage"]["ci"]["root"] is None  # local by default
    text = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(text.replace("  ci:\n    <<: *storage_tiny\n",
                                                   f"  ci:\n    <<: *storage_tiny\n    root: {ROOT}\n"))
    with pytest.MonkeyPatch.context() as patch, moto_server() as (host, port), FaultProxy(host, port) as proxy:
        env = _env(proxy.url)
        for key, value in env.items():
            patch.setenv(key, value)
        fs, _ = root_filesystem(ROOT, None)
        fs.mkdir(STORE)
        fs.mkdir(CACHE)
        _sh(_dvc("remote", "add", "-d", "store", f"s3://{CACHE}/cache"), work, env)
        _sh(_dvc("remote", "modify", "store", "endpointurl", proxy.url), work, env)
        git = ["git", "-c", "user.name=k2", "-c", "user.email=k2@localhost"]
        _sh([*git, "commit", "-qam", "storage root and DVC remote on S3"], work, env)
        proxy.plan = FaultPlan(every=FAULT_EVERY)
        output = _sh([str(REPO / ".venv" / "bin" / "k2"), "run"], work, env)
        output += _sh(_dvc("push"), work, env, timeout=600)
        _sh([*git, "add", "dvc.lock"], work, env)
        _sh([*git, "commit", "-qm", "pipeline outputs"], work, env)
        clone = base / "clone"
        _sh(["git", "clone", "-q", str(work), str(clone)], base, env)
        output += _sh(_dvc("pull"), clone, env, timeout=600)
        yield {"work": work, "clone": clone, "output": output, "proxy": proxy, "moto": (host, port)}


def _cached_outputs(work: Path) -> list[str]:
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    return [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])
            if not (isinstance(o, dict) and next(iter(o.values())).get("cache") is False)]


def _files(folder: Path) -> dict[str, bytes]:
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_run_met_faults_and_retried_through_them(s3_run):
    assert len(s3_run["proxy"].plan.faults) >= 5, s3_run["proxy"].plan.faults


def test_every_stage_output_is_published_byte_identical(s3_run):
    work = s3_run["work"]
    fs, _ = root_filesystem(ROOT, None)
    for stage in layout.STAGES:
        for name in stage_outputs(stage, work):
            local = work / name
            if local.is_file():
                assert fs.cat_file(f"{ROOT}/{name}".removeprefix("s3://")) == local.read_bytes(), name
                continue
            manifest = read_manifest(f"{ROOT}/{name}", None)
            assert manifest is not None, f"{name}: no {PUBLISHED}"
            prefix = f"{ROOT}/{name}/v-{manifest['version']}".removeprefix("s3://")
            assert {n: fs.cat_file(f"{prefix}/{n}") for n in manifest["files"]} == _files(local), name


def test_a_fresh_clone_pulls_byte_identical_outputs(s3_run):
    work, clone = s3_run["work"], s3_run["clone"]
    names = _cached_outputs(work)
    assert "checkpoints/sft" in names and "data/validated" in names
    for name in names:
        assert _files(clone / name) == _files(work / name), name


def test_the_published_checkpoint_loads_straight_from_s3(s3_run):
    import torch

    from k2core.model import K2ForCausalLM

    remote = K2ForCausalLM.from_pretrained(f"{ROOT}/checkpoints/sft")
    local = K2ForCausalLM.from_pretrained(s3_run["work"] / "checkpoints" / "sft")
    for (name, a), (_, b) in zip(remote.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_mlflow_artifacts_are_on_s3(s3_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{s3_run['work'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("k2")
    assert experiment.artifact_location == f"{ROOT}/mlartifacts"
    runs = client.search_runs([experiment.experiment_id])
    assert {run.data.tags["k2.stage"] for run in runs} >= {*layout.STAGES, "pipeline"}
    fs, _ = root_filesystem(ROOT, None)
    sft = next(run for run in runs if run.data.tags["k2.stage"] == "sft")
    outputs = client.get_run(sft.info.run_id).outputs.model_outputs
    model = client.get_logged_model(outputs[0].model_id)  # the published checkpoint
    assert model.artifact_location.startswith(f"{ROOT}/mlartifacts/")
    assert fs.exists(model.artifact_location.removeprefix("s3://") + "/model/model.safetensors")


def test_no_secret_is_written_anywhere(s3_run):
    work = s3_run["work"]
    assert not (work / ".dvc" / "config.local").exists()  # credentials came from the environment only
    canaries = [value.encode() for value in CANARIES.values()]
    found = [line for line in s3_run["output"].encode().splitlines() if any(c in line for c in canaries)]
    cache = work / ".dvc" / "cache"  # the same bytes as the DVC remote's objects, which are read below
    for path in work.rglob("*"):
        if path.is_file() and not path.is_symlink() and cache not in path.parents:
            data = path.read_bytes()
            found += [str(path) for c in canaries if c in data]
    fs, _ = root_filesystem(ROOT, None)
    for bucket in (STORE, CACHE):
        for key in fs.find(bucket):
            found += [key for c in canaries if c in fs.cat_file(key)]
    assert not found, found[:10]
