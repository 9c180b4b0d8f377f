"""Per-step metric history -> a CSV that `dvc plots` reads and a PNG people look at."""

from __future__ import annotations

import csv
from pathlib import Path


def write_history(history: dict[str, list[tuple[int, float]]], out_dir: Path, title: str) -> list[Path]:
    """Write `metrics.csv` (step + one column per metric) and `curves.png` (one panel per metric)."""
    if not history:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(history)
    steps = sorted({step for series in history.values() for step, _ in series})
    table = {name: dict(series) for name, series in history.items()}
    csv_path = out_dir / "metrics.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *names])
        for step in steps:
            writer.writerow([step, *(table[name].get(step, "") for name in names)])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [name for name in names if len(history[name]) > 1]  # single points make empty panels
    if not curves:
        return [csv_path]
    columns = min(3, len(curves))
    rows = -(-len(curves) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for axis, name in zip(axes.flat, curves):
        xs, ys = zip(*sorted(history[name]))
        axis.plot(xs, ys, linewidth=1.2)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(curves):]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    png_path = out_dir / "curves.png"
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return [csv_path, png_path]
