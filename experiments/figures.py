"""The two figures (PNG) and the `dvc plots` tables (CSV with a step column)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from experiments.runner import RunResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: Path, columns: dict[str, Sequence[float]]) -> Path:
    """One row per index; every column must have the same length."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns differ in length: { {k: len(v) for k, v in columns.items()} }")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
    return path


def logit_explosion_figure(runs: dict[str, RunResult], tau: float, path: Path) -> Path:
    """Max logit (log scale, tau dashed) and training loss over steps, one line per arm."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run in runs.items():
        left.plot(run.steps[: len(run.max_logit)], run.max_logit, label=name, linewidth=1.2)
        right.plot(run.steps, run.loss, label=name, linewidth=1.0, alpha=0.85)
    left.axhline(tau, color="black", linestyle="--", linewidth=0.8, label=f"tau = {tau:g}")
    left.set_yscale("log")
    left.set_title("max pre-softmax logit (all heads)")
    right.set_title("training loss")
    for axis in (left, right):
        axis.set_xlabel("step")
    return _finish(plt, figure, (left, right), path)


def token_efficiency_figure(sweeps: dict[str, list[RunResult]], best: dict[str, RunResult],
                            budgets: list[RunResult], target: float, path: Path) -> Path:
    """Validation loss against tokens: every sweep run faint, the best run of each optimizer bold, and the final
    losses of the separately scheduled shorter MuonClip runs as markers."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for color, (name, runs) in zip(("tab:blue", "tab:orange"), sweeps.items()):
        for run in runs:
            if run is not best[name]:
                axis.plot(run.eval_tokens, run.val_loss, color=color, alpha=0.3, linewidth=0.8)
        axis.plot(best[name].eval_tokens, best[name].val_loss, color=color, linewidth=1.8,
                  label=f"{name} (best lr {best[name].config.lr:g})")
    axis.plot([run.eval_tokens[-1] for run in budgets], [run.val_loss[-1] for run in budgets], "o--",
              color="tab:blue", markersize=4, linewidth=0.8, label="muonclip, shorter budgets (final losses)")
    axis.axhline(target, color="black", linestyle="--", linewidth=0.8, label="AdamW final val loss")
    axis.set_xlabel("training tokens")
    axis.set_ylabel("validation loss")
    axis.set_ylim(top=min(axis.get_ylim()[1], target + 2.5))
    return _finish(plt, figure, (axis,), path)


def _finish(plt, figure, axes, path: Path) -> Path:
    """Grid and legend on every panel, then write the PNG and free the figure."""
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
