"""Prefect task of the benchmark stage."""

from k2core.eval import run_bench
from tasks import k2_task

benchmark = k2_task(run_bench, name="benchmark")
