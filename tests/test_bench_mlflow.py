"""The bench in MLflow: one evaluation run per model under the bench run, the same `bench/<task>/<metric>` keys on
each, a checkpoint's scores on its LoggedModel too, and the HTML comparison report, rendered in headless Chromium."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.bench import RESULT_ARTIFACT, EvaluationRuns
from flows.report import write_report
from k2core.eval.bench import bench_metrics, run_bench
from k2core.storage import write_manifest
from k2core.tracking.base import DatasetRef
from k2core.tracking.mlflow_tracker import PARENT_ENV, open_run
from tasks.training import publish_checkpoint
from tests.test_eval_bench import bench_config, write_data_dir
from tests.test_rl_trainer import build_tokenizer, tiny_model

CHECKPOINTS = ("pretrain", "sft")


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    """Two published checkpoints with training runs (curves, a dataset input), benchmarked beside an external
    backend, each model's result logged through EvaluationRuns under one bench run, and the report written."""
    root = tmp_path_factory.mktemp("bench_mlflow")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv(PARENT_ENV, raising=False)
    data = write_data_dir(root)
    tokenizer = build_tokenizer(root / "tok")
    corpus = DatasetRef("data/validated/corpus.parquet", "0123456789abcdef0123456789abcdef", str(root / "corpus"))
    for seed, stage in enumerate(CHECKPOINTS):
        export = root / "export" / stage
        tiny_model(len(tokenizer), seed=seed).save_pretrained(export)
        tokenizer.save_pretrained(str(export))
        write_manifest(export, stage)
        with open_run(stage, {"k2.stage": stage, "git.commit": "abc123", "k2.params_hash": f"p{seed}"}, root) as run:
            run.log_params({f"{stage}.lr": 0.01 * (seed + 1)})
            run.log_inputs([corpus], "training")
            for step in range(1, 7):
                run.log_metrics({"train/loss": 6.0 - step * (0.5 + seed * 0.2), "train/lr": 0.001 * step}, step=step)
            run.log_metrics({"eval/val_loss": 5.0 - seed}, step=6)
            publish_checkpoint.fn(stage, export, root / "checkpoints" / stage, run, step=6)
    served = {"served_sft": {"kind": "k2", "path": str(root / "checkpoints/sft"), "device": "cpu", "dtype": "float32"}}
    checkpoints = {stage: Path("checkpoints") / stage for stage in CHECKPOINTS}
    with open_run("bench", {"k2.stage": "bench", "git.commit": "abc123", "k2.profile": "tiny"}, root) as bench:
        datasets = [DatasetRef("data/validated", "feedfacefeedfacefeedfacefeedface.dir", str(root / "validated")),
                    *(DatasetRef(str(path), f"{i:032x}.dir", str(root / path)) for i, path in
                      enumerate(checkpoints.values()))]
        runs = EvaluationRuns(bench, root, datasets, [str(p) for p in checkpoints.values()], None)
        results = run_bench(checkpoints, root / "tok", data, bench_config(tool_agents=served), on_result=runs)
        report = write_report(results, root / "reports" / "bench.html", bench)
    yield {"root": root, "results": results, "bench": bench, "report": report}
    mp.undo()


def test_each_model_has_a_nested_evaluation_run_with_the_same_keys(benched):
    client, bench = benched["bench"].client, benched["bench"]
    models = benched["results"]["models"]
    assert list(models) == [*CHECKPOINTS, "served_sft"]
    keys = []
    for name, entry in models.items():
        run = client.get_run(entry["mlflow_run_id"])
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == bench.run_id and tags["k2.bench.model"] == name
        assert tags["k2.stage"] == "bench" and tags["git.commit"] == "abc123" and tags["k2.profile"] == "tiny"
        expected = bench_metrics(entry["tasks"])
        assert run.data.metrics == expected
        assert [a.path for a in client.list_artifacts(run.info.run_id, "bench")] == [RESULT_ARTIFACT]
        keys.append(set(run.data.metrics))
    assert keys[0] == keys[1] and keys[2] == {k for k in keys[0] if k.startswith("bench/tool/")}
    assert "k2.model_id" not in client.get_run(models["served_sft"]["mlflow_run_id"]).data.tags


def test_a_checkpoints_scores_are_logged_against_its_logged_model_and_the_run_reads_it(benched):
    client = benched["bench"].client
    for stage in CHECKPOINTS:
        entry = benched["results"]["models"][stage]
        model = client.get_logged_model(entry["model_id"])
        assert model.name == f"k2-{stage}" and model.source_run_id == entry["training_run_id"]
        on_model = {m.key: m.value for m in model.metrics if m.key.startswith("bench/")}
        assert on_model == bench_metrics(entry["tasks"])
        assert {m.run_id for m in model.metrics if m.key.startswith("bench/")} == {entry["mlflow_run_id"]}
        run = client.get_run(entry["mlflow_run_id"])
        assert run.data.tags["k2.model_id"] == entry["model_id"] and run.data.tags["k2.checkpoint"] == stage
        assert [m.model_id for m in run.inputs.model_inputs] == [entry["model_id"]]
        names = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
        assert set(names) == {"data/validated", f"checkpoints/{stage}"}  # not the other checkpoint
        assert {tags["mlflow.data.context"] for tags in names.values()} == {"evaluation"}


def test_the_report_is_self_contained_and_shows_every_model_and_its_lineage(benched):
    text = benched["report"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the report must not load anything"
    assert "<script" not in text
    for name in (*CHECKPOINTS, "served_sft"):
        assert f">{name}<" in text
    models = benched["results"]["models"]
    for stage in CHECKPOINTS:
        assert f"models:/{models[stage]['model_id']}" in text and f"models:/k2-{stage}/1" in text
        assert models[stage]["training_run_id"] in text
    assert "abc123" in text and "0123456789abcdef0123456789abcdef" in text and f"{CHECKPOINTS[1]}.lr" in text
    assert text.count("data:image/png;base64,") == 2  # scores and training curves
    assert "heldout_lm / val_loss" in text and "tool / pass1" in text


def test_the_report_renders_in_headless_chromium(benched, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed: scripts/setup.sh --dev installs it"
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1280,2000", benched["report"].as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    pixels = list(image.getdata())
    non_white = sum(1 for p in pixels if min(p) < 235) / len(pixels)
    colours = len(set(pixels))
    assert non_white > 0.08 and colours > 200, (non_white, colours)
    shutil.copy(shot, benched["root"] / "report.png")  # kept beside the fixture's files for a look


def test_intervals_show_in_the_table_and_missing_scores_as_a_dash():
    from k2core.eval.report import ModelReport, render_report

    models = [ModelReport("sft", "checkpoint", {"mmlu": {"n": 40, "metrics": {
                  "accuracy": {"value": 0.5, "ci95": [0.35, 0.65]}, "macro_accuracy": {"value": 0.4, "ci95": None}}}}),
              ModelReport("smollm2", "backend", {"ifeval": {"n": 5, "metrics": {"prompt_strict": {
                  "value": 0.2, "ci95": [0.0, 0.6]}}}})]
    text = render_report(models, "t", {})
    assert "0.5 <span class=\"ci\">[0.35, 0.65]</span>" in text and "<td>0.4</td>" in text
    assert text.count("&mdash;") == 3  # each model lacks the other's task metrics
    assert "mmlu / accuracy" in text and "ifeval / prompt_strict" in text and "No training curves" in text
