"""Prefect fan-out of tool-use trajectory generation: one mapped task per shard.

`map_shards` must be used inside a flow; the flow's task runner decides where shards run (threads by default,
processes, a Dask or Ray cluster) without code changes: `task_runner` reads it from a short spec, e.g. an
environment variable (docs/scale-out.md). Every task argument is plain pydantic data: the config, the shard, and the
configs of the LLM backends its roles name, which the worker builds itself (`k2core.agentic.workers`), so nothing
tied to one process has to travel.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

from prefect import unmapped
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from k2core.agentic.generate import AgenticConfig, Shard, ShardMapper, ShardResult, ToolDatasets, generate_tool_datasets
from k2core.agentic.workers import PLANNING_ROLES, BackendConfig, backends_for, role_configs, run_shard_here
from tasks import k2_task

generate_shard = k2_task(run_shard_here, name="agentic-shard", retries=1)


def map_shards(cfg: AgenticConfig, llm: Mapping[str, BackendConfig] | None = None) -> ShardMapper:
    """A shard mapper for `generate_tool_datasets` that submits every shard as a mapped Prefect task; `llm` holds the
    configs of the named backends (synth.llm); each task carries those its roles use."""
    configs = role_configs(cfg, llm or {})

    def run(shards: Sequence[Shard]) -> list[ShardResult]:
        futures = generate_shard.map(unmapped(cfg), list(shards), unmapped(configs))
        return [f.result() for f in futures]

    return run


def generate_tool_datasets_mapped(cfg: AgenticConfig, seed: int, llm: Mapping[str, BackendConfig] | None = None
                                  ) -> ToolDatasets:
    """`generate_tool_datasets` with its shards mapped as Prefect tasks (call from inside a flow); the planning role
    (tool_generator) runs here, the others in the workers."""
    planner = backends_for(cfg, llm or {}, PLANNING_ROLES)
    return generate_tool_datasets(cfg, seed, planner, mapper=map_shards(cfg, llm))


def task_runner(spec: str | None) -> TaskRunner:
    """The task runner a spec names: `threads[:N]` (the default, also for an empty spec), `processes[:N]`,
    `dask[:N]` (a LocalCluster of N single-threaded worker processes), `dask:tcp://HOST:PORT` (a running Dask
    scheduler), `ray` (a local Ray) or `ray:ray://HOST:PORT` (a running Ray cluster); N defaults to all cores."""
    kind, _, arg = (spec or "threads").partition(":")
    count = int(arg) if arg.isdigit() else None
    if arg and count is None and kind in ("threads", "processes"):
        raise ValueError(f"task runner {spec!r}: {kind} takes a number of workers, e.g. {kind}:2")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=count)
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=count)
    if kind == "dask":
        dask = _runner_class("prefect_dask", "DaskTaskRunner")
        if arg and count is None:
            return dask(address=arg)
        local = {"processes": True, "threads_per_worker": 1, **({"n_workers": count} if count else {})}
        return dask(cluster_class="distributed.LocalCluster", cluster_kwargs=local)
    if kind == "ray":
        return _runner_class("prefect_ray", "RayTaskRunner")(address=arg or None)
    raise ValueError(f"unknown task runner {spec!r}; use threads[:N], processes[:N], dask[:N], dask:tcp://HOST:PORT, "
                     "ray or ray:ray://HOST:PORT")


def _runner_class(module: str, name: str) -> Callable[..., TaskRunner]:
    """A runner class from an optional integration package, or an error saying what to install."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        package = module.replace("_", "-")
        raise ModuleNotFoundError(f"{name} needs the {package} package: pip install {package} "
                                  "(docs/scale-out.md)") from error
