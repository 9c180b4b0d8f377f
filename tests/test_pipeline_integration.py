"""The README's main command, as a new user types it, on the `ci` profile in a temporary copy of the repository.

The command is read out of README.md and run by path with nothing of ours on PATH (`bash scripts/setup.sh &&
.venv/bin/k2 run`): setup finds this environment's packages and installs the copy itself. Then: every stage's
outputs and metrics, the MLflow record (one run per stage, tags, registered checkpoints), the closing table
(best checkpoint per score, the UI commands), that nothing is stale, and that `dvc repro` typed in the activated
venv after a changed SFT param reruns sft, rl and bench and nothing upstream.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import layout
from flows.workspace import clone_workspace
from k2core.config import load_params
from tests.conftest import REPO
from tests.readme import new_user_env, readme_commands, venv_over_this_one

pytestmark = pytest.mark.integration

# Secrets a user may well have exported; no log, MLflow param or tag, Prefect parameter or artifact may hold them.
CANARIES = {"AWS_SECRET_ACCESS_KEY": "canary-aws-5f1c9e0d7b", "OPENAI_API_KEY": "sk-canary-openai-93ab41d2"}


def _run(command: str, work: Path, env: dict[str, str], timeout: int = 1800) -> subprocess.CompletedProcess:
    """`command` through bash, as typed at a prompt."""
    result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """The README's first command, run as written in a fresh copy on the ci profile; its output."""
    work = tmp_path_factory.mktemp("pipeline") / "k2"
    work.mkdir()
    clone_workspace(REPO, work, profile="ci")
    venv_over_this_one(work)
    main_command = readme_commands()[0]
    assert main_command.endswith(".venv/bin/k2 run"), main_command
    result = _run(main_command, work, {**new_user_env(), **CANARIES})
    return work, result.stdout + result.stderr


def _activated(work: Path) -> dict[str, str]:
    """A shell after `source .venv/bin/activate`. The copy's venv holds only k2's own scripts (its packages come
    from this environment), so this environment's scripts follow it on PATH for `dvc` itself; DVC then runs each
    stage's `k2 stage NAME` from the copy's venv, which comes first."""
    env = new_user_env()
    env["PATH"] = f"{work / '.venv' / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(work / ".venv")
    return env


def test_readme_test_command_is_what_ci_runs():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[1] in (REPO / ".ci" / "run").read_text()


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
    models = json.loads((work / layout.metrics_path("bench")).read_text())["models"]
    for stage in layout.CHECKPOINT_STAGES:
        scores = {f"{task}/{metric}": estimate["value"] for task, result in models[stage]["tasks"].items()
                  for metric, estimate in result["metrics"].items()}
        assert scores["heldout_lm/val_loss"] > 0 and scores["heldout_lm/bits_per_byte"] > 0
        assert 0.0 <= scores["math/accuracy"] <= 1.0
        assert 0.0 <= scores["tool/pass1"] <= 1.0
    harness = load_params(work / "params.yaml").section("bench").harness
    for stage in layout.CHECKPOINT_STAGES:  # every public benchmark of the profile, at its subset size
        tasks, folder = models[stage]["tasks"], work / layout.BENCH_SAMPLES_DIR / stage
        for name, spec in harness.tasks.items():
            trials = spec.trials if name.startswith("tau2") else 1
            assert tasks[name]["n"] == spec.limit * trials and tasks[name]["metrics"], (stage, name)
            lines = (folder / f"{name}.samples.jsonl").read_text().splitlines()
            assert len(lines) == tasks[name]["n"] and all(json.loads(line)["id"] for line in lines), (stage, name)
    report = (work / layout.REPORT_PATH).read_text()
    assert all(f">{stage}<" in report for stage in layout.CHECKPOINT_STAGES) and "data:image/png;base64," in report


def test_mlflow_has_a_tagged_run_per_stage_and_registered_checkpoints(reproduced):
    work, _ = reproduced
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("k2")
    runs = client.search_runs([experiment.experiment_id])
    runs = [client.get_run(run.info.run_id) for run in runs]  # with their inputs and outputs
    by_stage = {run.data.tags["k2.stage"]: run for run in runs
                if run.data.tags["k2.stage"] != "pipeline" and "k2.bench.model" not in run.data.tags}
    assert set(by_stage) == set(layout.STAGES)
    for stage, run in by_stage.items():
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dvc.stage"] == stage and tags["k2.profile"] == "ci"
        assert len(tags["git.commit"]) >= 40 and tags["k2.params_hash"]
        assert tags["prefect.flow_run_id"]
    for stage in ("pretrain", "sft"):  # the same keys whichever stage trained
        logged = set(client.get_run(by_stage[stage].info.run_id).data.metrics)
        assert {"train/loss", "train/lr", "train/tokens_per_s", "train/max_logit", "train/clipped_head_fraction",
                "train/skipped_steps", "eval/val_loss"} <= logged, stage
        assert not any(key.startswith(f"{stage}/") for key in logged)
    assert {"train/loss", "rl/reward_mean"} <= set(client.get_run(by_stage["rl"].info.run_id).data.metrics)
    models = json.loads((work / layout.metrics_path("bench")).read_text())["models"]
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    for stage in layout.CHECKPOINT_STAGES:
        versions = client.search_model_versions(f"name='k2-{stage}'")
        assert [v.run_id for v in versions] == [by_stage[stage].info.run_id]
        model = client.get_logged_model(models[stage]["model_id"])
        assert versions[0].source == f"models:/{model.model_id}" and model.source_run_id == by_stage[stage].info.run_id
        evaluation = client.get_run(models[stage]["mlflow_run_id"])
        assert evaluation.data.tags["mlflow.parentRunId"] == by_stage["bench"].info.run_id
        bench_keys = {k for k in evaluation.data.metrics if k.startswith("bench/")}
        assert "bench/math/accuracy" in bench_keys and bench_keys <= {m.key for m in model.metrics}
        assert {"bench/mmlu/accuracy", "bench/ifbench/prompt_strict", "bench/humaneval/pass_at_1",
                "bench/bfcl/accuracy", "bench/tau2_retail/pass_hat_1"} <= bench_keys
        logged = {a.path for a in client.list_artifacts(evaluation.info.run_id, "bench/samples")}
        tasks = load_params(work / "params.yaml").section("bench").harness.tasks
        assert logged == {"bench/samples/summary.json", *(f"bench/samples/{t}.samples.jsonl" for t in tasks)}
    assert len({frozenset(client.get_run(models[s]["mlflow_run_id"]).data.metrics)
                for s in layout.CHECKPOINT_STAGES}) == 1
    for stage, run in by_stage.items():  # each stage's data inputs carry the hashes dvc.lock recorded
        hashes = {dep["path"]: dep["md5"] for dep in lock[stage]["deps"]}
        inputs = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        assert inputs and all(hashes[name] == digest for name, digest in inputs.items()), stage
    assert {i.dataset.name for i in by_stage["sft"].inputs.dataset_inputs} == {
        "checkpoints/pretrain", "data/validated/sft.parquet", "artifacts/tokenizer"}
    assert [m.model_id for m in by_stage["sft"].inputs.model_inputs] == [models["pretrain"]["model_id"]]
    bench_run = by_stage["bench"].info.run_id
    assert [a.path for a in client.list_artifacts(bench_run, "reports")] == ["reports/bench.html"]
    assert not any("/" in key for key in client.get_run(bench_run).data.metrics)  # scores live on the child runs


def test_k2_run_ends_with_the_table_the_best_checkpoint_and_the_ui_commands(reproduced):
    work, output = reproduced
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("checkpoint") and "mlflow_run_id" in line)
    table = lines[header: header + 6]
    assert [row.split()[0] for row in table[2:]] == [*layout.CHECKPOINT_STAGES, "best"], table
    models = json.loads((work / layout.metrics_path("bench")).read_text())["models"]
    best = dict(zip(table[0].split(), table[-1].split()))
    lowest = min(layout.CHECKPOINT_STAGES,
                 key=lambda stage: models[stage]["tasks"]["heldout_lm"]["metrics"]["val_loss"]["value"])
    assert lowest in best["val_loss"].split("=")
    assert ".venv/bin/k2 ui" in output and "mlflow ui --backend-store-uri sqlite:///" in output


def test_no_secret_from_the_environment_is_written_anywhere(reproduced):
    """Every file the run wrote or changed (MLflow's and Prefect's databases and logs, artifacts, metrics,
    checkpoints, DVC's state) is searched for the canary values, and so is what the run printed. Files the copy
    holds unchanged from its commit (this test's own source among them) are the repository, not the run's."""
    work, output = reproduced
    git = ["git", "-C", str(work), "ls-files", "-z"]
    unchanged = set(subprocess.run(git, capture_output=True, text=True, check=True).stdout.split("\0"))
    unchanged -= set(subprocess.run([*git, "-m"], capture_output=True, text=True, check=True).stdout.split("\0"))
    scanned = 0
    for path in work.rglob("*"):
        relative = path.relative_to(work)
        if path.is_file() and not {".venv", ".git"} & set(relative.parts) and str(relative) not in unchanged:
            data = path.read_bytes()
            scanned += 1
            for name, secret in CANARIES.items():
                assert secret.encode() not in data, f"{name} was written to {path.relative_to(work)}"
    assert scanned > 50 and (work / "mlflow.db").exists() and (work / ".prefect" / "prefect.db").exists()
    assert not any(secret in output for secret in CANARIES.values())


def test_nothing_is_stale_afterwards(reproduced):
    work, _ = reproduced
    status = _run("dvc status", work, _activated(work))
    assert "Data and pipelines are up to date" in status.stdout


def test_changing_an_sft_param_reruns_only_downstream_stages(reproduced):
    """`dvc repro` typed in the activated venv."""
    work, _ = reproduced
    params_file = work / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(_bump_sft_lr(original))
    assert yaml.safe_load(params_file.read_text())["sft"]["ci"]["lr"] == 2 * yaml.safe_load(original)["sft"]["ci"]["lr"]
    try:
        output = _run("dvc repro", work, _activated(work)).stdout
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
