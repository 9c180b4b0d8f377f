"""Agentic tool-use data: executable stateful environments, seeded faults, procedural tasks with rubrics,
scripted users and agents, multi-turn rollouts and a rule-based judge (Kimi K2 §3.1.1, τ-bench style)."""

from k2core.agentic.generate import AgenticConfig, generate_tool_data

__all__ = ["AgenticConfig", "generate_tool_data"]
