"""The checkpoint comparison report: one self-contained HTML file (inline CSS, plots as base64 PNG, no network).

For every evaluated model (the pipeline's checkpoints and any external model beside them): each task's scores with
their 95% intervals, as a table and as bar charts; the training curves of the checkpoints, overlaid per metric; and
each checkpoint's lineage (model and run ids, commit, params hash, the datasets it was trained on with their hashes,
its params). `render_report` only formats what it is given; `flows.report` collects it from MLflow.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

# Curves shown when a run logged them, in this order (each panel overlays every checkpoint that has the key).
CURVE_KEYS = ("train/loss", "eval/val_loss", "train/lr", "train/max_logit", "train/clipped_head_fraction",
              "train/tokens_per_s", "rl/reward_mean", "rl/accuracy", "rl/response_len")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class ModelReport:
    """What the report shows about one evaluated model."""

    name: str
    kind: str  # "checkpoint" or "backend"
    tasks: dict[str, dict[str, Any]]  # task -> {"n", "metrics": {metric: {"value", "ci95"}}} (harness shape)
    lineage: dict[str, str] = field(default_factory=dict)  # label -> value (ids, commit, hashes)
    datasets: list[tuple[str, str]] = field(default_factory=list)  # (path, DVC digest) it was trained on
    params: dict[str, str] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric key -> (step, value)


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _grid(count: int, columns: int = 3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 2.9 * rows), squeeze=False)
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    return figure, list(axes.flat)


def _scores(models: list[ModelReport]) -> list[tuple[str, str]]:
    """Every (task, metric) any model has, in first-seen order."""
    seen: list[tuple[str, str]] = []
    for model in models:
        for task, result in model.tasks.items():
            seen += [(task, metric) for metric in result["metrics"] if (task, metric) not in seen]
    return seen


def _estimate(model: ModelReport, task: str, metric: str) -> dict[str, Any] | None:
    return model.tasks.get(task, {}).get("metrics", {}).get(metric)


def scores_figure(models: list[ModelReport]) -> str:
    """One bar panel per task on its headline (first) metric, a bar per model, labelled with its value, with its 95%
    interval as an error bar; the table has every metric."""
    scores = [(task, metric) for task, metric in _scores(models)
              if metric == next(iter(next(m.tasks[task] for m in models if task in m.tasks)["metrics"]))]
    if not scores:
        return "<p>No scores.</p>"
    figure, axes = _grid(len(scores), 3)
    colours = {m.name: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    for axis, (task, metric) in zip(axes, scores):
        tops = [0.0]
        for x, model in enumerate(models):
            estimate = _estimate(model, task, metric)
            if estimate is None:
                continue
            value, ci = estimate["value"], estimate.get("ci95")
            error = [[value - ci[0]], [ci[1] - value]] if ci else None
            bars = axis.bar(x, value, color=colours[model.name], yerr=error, capsize=4)
            axis.bar_label(bars, labels=[f"{value:.3g}"], fontsize=7, padding=2)
            tops.append(ci[1] if ci else value)
        top = max(tops)
        axis.set_ylim(min(axis.get_ylim()[0], 0.0), top * 1.15 if top > 0 else 1.0)  # room for the labels
        axis.set_xticks(range(len(models)), [m.name for m in models], fontsize=7, rotation=20)
        axis.set_title(f"{task} / {metric}", fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def curves_figure(models: list[ModelReport]) -> str:
    """One panel per training metric, a line per checkpoint that logged it."""
    keys = [key for key in CURVE_KEYS if any(len(m.curves.get(key, [])) > 0 for m in models)]
    if not keys:
        return "<p>No training curves were found for these models.</p>"
    from matplotlib.ticker import MaxNLocator

    figure, axes = _grid(len(keys), 3)
    for axis, key in zip(axes, keys):
        for i, model in enumerate(models):
            points = sorted(model.curves.get(key, []))
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if len(points) < 3 else None, markersize=3, linewidth=1.3,
                          color=PALETTE[i % len(PALETTE)], label=model.name)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def _cell(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return '<td class="none">&mdash;</td>'
    ci = estimate.get("ci95")
    interval = f' <span class="ci">[{ci[0]:.4g}, {ci[1]:.4g}]</span>' if ci else ""
    return f"<td>{estimate['value']:.4g}{interval}</td>"


def scores_table(models: list[ModelReport]) -> str:
    head = "".join(f"<th>{html.escape(m.name)}<br><span class=kind>{html.escape(m.kind)}</span></th>" for m in models)
    rows = []
    for task, metric in _scores(models):
        n = next((m.tasks[task].get("n") for m in models if task in m.tasks), None)
        label = f"{html.escape(task)} / {html.escape(metric)}" + (f' <span class="ci">n={n}</span>' if n else "")
        rows.append(f"<tr><th>{label}</th>{''.join(_cell(_estimate(m, task, metric)) for m in models)}</tr>")
    return f'<table class="scores"><tr><th>task / metric</th>{head}</tr>{"".join(rows)}</table>'


def _pairs(items: list[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>" for k, v in items)
    head = f"<tr><th>{header[0]}</th><th>{header[1]}</th></tr>" if header else ""
    return f"<table>{head}{rows}</table>"


def lineage_section(model: ModelReport) -> str:
    parts = [f"<h3>{html.escape(model.name)} <span class=kind>{html.escape(model.kind)}</span></h3>"]
    parts.append(_pairs(list(model.lineage.items())) if model.lineage else "<p>No lineage recorded.</p>")
    if model.datasets:
        parts.append("<h4>Data (DVC hashes)</h4>" + _pairs(model.datasets, ("dataset", "digest")))
    if model.params:
        parts.append(f"<details><summary>params ({len(model.params)})</summary>"
                     + _pairs(sorted(model.params.items()), ("param", "value")) + "</details>")
    return '<div class="lineage">' + "".join(parts) + "</div>"


STYLE = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 24px; color: #1a1a1a; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; border-bottom: 2px solid #1f77b4;
padding-bottom: 3px; margin-top: 28px; } h3 { font-size: 15px; margin: 14px 0 6px; } h4 { font-size: 13px; }
.meta { color: #555; font-size: 13px; } table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
tr:nth-child(even) td { background: #f4f7fb; } th { background: #e8eef6; }
table.scores td { text-align: right; font-variant-numeric: tabular-nums; } .ci { color: #666; font-size: 11px; }
.kind { color: #777; font-weight: normal; font-size: 11px; } .none { color: #aaa; text-align: center; }
.lineage { display: inline-block; vertical-align: top; margin: 0 18px 12px 0; max-width: 600px; }
code { font-size: 11px; word-break: break-all; } img { max-width: 100%; }
"""


def render_report(models: list[ModelReport], title: str, meta: dict[str, str]) -> str:
    """The whole report as one HTML document."""
    info = " &middot; ".join(f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in meta.items())
    checkpoints = [m for m in models if m.kind == "checkpoint"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{info}</p>
<h2>Scores</h2>
<p class="meta">Value and bootstrap 95% interval where the task keeps per-sample scores; tracked in MLflow as
<code>bench/&lt;task&gt;/&lt;metric&gt;</code> on each model's evaluation run and LoggedModel.</p>
{scores_table(models)}
{scores_figure(models)}
<h2>Training curves</h2>
{curves_figure(checkpoints)}
<h2>Lineage</h2>
{"".join(lineage_section(m) for m in models)}
</body></html>
"""
