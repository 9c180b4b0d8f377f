"""The whole K2 pipeline as one Prefect flow; DVC decides which stages are stale.

Each stage is a task here (`dvc repro` of that stage alone, in order) and, when
DVC finds it stale, a flow run of its own in the stage process, nested under
this pipeline's MLflow parent run through `MLFLOW_PARENT_RUN_ID`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow

from flows import layout
from flows.interpreter import put_interpreter_on_path
from flows.provenance import git_commit, prefect_tags
from flows.publishing import mlflow_artifact_root, publish_stage, storage_config
from k2core.config import load_params
from k2core.storage import read_json
from k2core.tracking.mlflow_tracker import PARENT_ENV, open_run
from tasks.dvc_stage import reproduce

# Summary column -> (bench task, metric) in metrics/bench.json: the pipeline's own tasks, then one headline figure
# per public benchmark the profile runs (every figure, with intervals, is in reports/bench.html and MLflow).
SUMMARY_SCORES = {"val_loss": ("heldout_lm", "val_loss"), "bits_per_byte": ("heldout_lm", "bits_per_byte"),
                  "math_accuracy": ("math", "accuracy"), "tool_pass1": ("tool", "pass1"),
                  "mmlu": ("mmlu", "accuracy"), "ifbench": ("ifbench", "prompt_strict"),
                  "humaneval": ("humaneval", "pass_at_1"), "bfcl": ("bfcl", "accuracy"),
                  "tau2_retail": ("tau2_retail", "pass_hat_1")}
LOWER_IS_BETTER = frozenset({"val_loss", "bits_per_byte"})


def checkpoint_summary(root: Path) -> list[dict[str, Any]]:
    """One row per published checkpoint: its benchmark scores and the MLflow run that trained it."""
    bench_path = root / layout.metrics_path("bench")
    models = read_json(bench_path)["models"] if bench_path.exists() else {}
    rows = []
    for stage in layout.CHECKPOINT_STAGES:
        run_file = root / layout.checkpoint_dir(stage) / "k2_run.json"
        tasks = models.get(stage, {}).get("tasks", {})
        scores = {column: tasks[task]["metrics"][metric]["value"] for column, (task, metric) in SUMMARY_SCORES.items()
                  if metric in tasks.get(task, {}).get("metrics", {})}
        rows.append(
            {
                "checkpoint": stage,
                "mlflow_run_id": read_json(run_file)["mlflow_run_id"] if run_file.exists() else "-",
                **scores,
            }
        )
    return rows


def best_row(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Which checkpoint is best on each score (ties joined with '='); lower is better for losses."""
    best: dict[str, str] = {"checkpoint": "best"}
    for score in SUMMARY_SCORES:
        scored = [(row[score], row["checkpoint"]) for row in rows if isinstance(row.get(score), (int, float))]
        if not scored:
            continue
        target = (min if score in LOWER_IS_BETTER else max)(value for value, _ in scored)
        best[score] = "=".join(name for value, name in scored if value == target)
    return best


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (every row gets every column seen in any row)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[f"{row.get(c, '-'):.4g}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


@flow(name="pipeline", log_prints=True)
def pipeline(root: str = ".", force: bool = False) -> list[dict[str, Any]]:
    """Reproduce every stage in order and return the checkpoint summary."""
    put_interpreter_on_path()  # a worker may run this flow from an interpreter whose scripts are not on PATH
    root_path = Path(root).resolve()
    params = load_params(root_path / "params.yaml")
    params.validate_all()  # fail on a bad params.yaml before any stage starts
    tags = {"k2.stage": "pipeline", "k2.profile": params.profile, "git.commit": git_commit(root_path), **prefect_tags()}
    storage = storage_config(params)
    with open_run("pipeline", tags, root_path, mlflow_artifact_root(storage)) as tracker:
        os.environ[PARENT_ENV] = tracker.run_id
        try:
            ran = {stage: reproduce(stage, root_path, force) for stage in layout.STAGES}
        finally:
            os.environ.pop(PARENT_ENV, None)
        for stage in layout.STAGES:  # stages DVC skipped too: the root may be new (unchanged bytes are not re-sent)
            publish_stage(stage, root_path, storage)
        tracker.log_dict({"stages_run": ran}, "pipeline/stages_run.json")
        tracker.log_artifact(root_path / "dvc.lock", "provenance")
        rows = checkpoint_summary(root_path)
        tracker.log_dict({"checkpoints": rows}, "pipeline/summary.json")
    print("\n" + format_table([*rows, best_row(rows)]))
    return rows
