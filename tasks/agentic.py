"""Prefect fan-out of tool-use trajectory generation: one mapped task per shard.

`generate_tool_datasets_mapped` must run inside a flow; the flow's task runner decides where shards run (threads by
default, a Dask or Ray runner, or workers of a pool) without code changes. Shards and results are plain pydantic
data, so they serialize to any of them. LLM backends travel as `unmapped` objects, which suits thread runners; for
process or remote runners pass `backends=None` and let the roles stay offline, or build backends inside the workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import unmapped

from k2core.agentic.generate import AgenticConfig, Backends, Shard, ShardResult, ToolDatasets, generate_tool_datasets, run_shard
from tasks import k2_task

generate_shard = k2_task(run_shard, name="agentic-shard", retries=1)


def map_shards(cfg: AgenticConfig, backends: Backends | None = None):
    """A shard mapper for `generate_tool_data` that submits every shard as a mapped Prefect task."""

    def run(shards: Sequence[Shard]) -> list[ShardResult]:
        futures = generate_shard.map(unmapped(cfg), list(shards), unmapped(backends))
        return [f.result() for f in futures]

    return run


def generate_tool_datasets_mapped(cfg: AgenticConfig, seed: int, backends: Backends | None = None) -> ToolDatasets:
    """`generate_tool_datasets` with its shards mapped as Prefect tasks (call from inside a flow)."""
    return generate_tool_datasets(cfg, seed, backends, mapper=map_shards(cfg, backends))
