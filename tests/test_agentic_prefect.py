"""Trajectory generation fanned out as mapped Prefect tasks gives the same data as the in-process run."""

from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from k2core.agentic import generate_tool_datasets
from tasks.agentic import generate_tool_datasets_mapped
from tests.test_agentic_simulated import config, mcp_file


def test_mapped_shards_match_in_process_run(prefect_api, tmp_path):
    cfg = config(mcp_file(tmp_path), num_shards=3, simulation={**config("x").simulation.model_dump(), "num_tasks": 12})

    @flow(name="agentic-mapped-test")
    def run():
        return generate_tool_datasets_mapped(cfg, seed=2)

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        mapped = run()
    local = generate_tool_datasets(cfg, seed=2)
    for name in ("tasks", "sft", "tools", "agents"):
        assert getattr(mapped, name).equals(getattr(local, name)), name
    assert mapped.stats == local.stats and mapped.stats["judged_total"] > 0 and len(mapped.sft) == mapped.stats["kept_total"]
    assert len(mapped.agents) == cfg.simulation.num_agents and len(mapped.tools) == mapped.stats["repository"]["tools"]
