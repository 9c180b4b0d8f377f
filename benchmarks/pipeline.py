"""Cold wall time of the whole pipeline (`k2 run` in a fresh workspace) and of a no-op `dvc repro`.

    .venv/bin/python benchmarks/pipeline.py [--profile tiny]

Prints JSON: seconds, and seconds divided by a matmul unit measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_unit_s  # noqa: E402
from flows.interpreter import scripts_dir  # noqa: E402
from flows.workspace import clone_workspace  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    unit = machine_unit_s()
    with tempfile.TemporaryDirectory() as tmp:
        work = clone_workspace(root, Path(tmp) / "k2", profile=args.profile)
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        k2 = str(scripts_dir() / "k2")  # by path, as the README runs it: k2 puts its own environment on PATH
        cold = timed([k2, "run"], work, env)
        noop = timed([sys.executable, "-m", "dvc", "repro"], work, env)
        metrics = json.loads((work / "metrics" / "pretrain.json").read_text())
    print(json.dumps({
        "profile": args.profile,
        "cold_pipeline_s": round(cold, 1),
        "noop_dvc_repro_s": round(noop, 2),
        "pretrain_tokens_per_s": metrics.get("tokens_per_s"),
        "machine_unit_s": round(unit, 4),
        "cold_pipeline_units": round(cold / unit),
        "noop_dvc_repro_units": round(noop / unit, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
