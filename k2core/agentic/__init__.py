"""Agentic tool-use data (Kimi K2 §3.1.1): executable stateful environments and a tool repository (real MCP specs,
live MCP servers, synthetic tools by domain evolution), diversified agents, rubric tasks, a stateful tool simulator
with seeded faults, scripted or LLM-backed users and judges, and sharded multi-turn rollouts."""

from k2core.agentic.generate import (
    AgenticConfig,
    Shard,
    ShardResult,
    ToolDatasets,
    ToolPlan,
    generate_tool_data,
    generate_tool_datasets,
    merge_shards,
    plan_tool_data,
    run_shard,
)
from k2core.agentic.repository import RepoTool, tools_frame
from k2core.agentic.settings import RepositoryConfig, RolesConfig, SimulationConfig

__all__ = [
    "AgenticConfig", "RepoTool", "RepositoryConfig", "RolesConfig", "Shard", "ShardResult", "SimulationConfig", "ToolDatasets", "ToolPlan",
    "generate_tool_data", "generate_tool_datasets", "merge_shards", "plan_tool_data", "run_shard", "tools_frame",
]
