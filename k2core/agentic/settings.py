"""Config sections of the agentic pipeline beyond the executable environments: the tool repository, trajectories
on simulated tools and the LLM-backed roles. Each section is optional in `AgenticConfig`; absent means off."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from k2core.agentic.harvest import McpServerConfig


class RepositoryConfig(BaseModel):
    """Where tools come from and how near-duplicates are removed."""

    model_config = ConfigDict(extra="forbid")
    mcp_path: str = Field(min_length=1)
    max_mcp_tools: int = Field(ge=0)
    live_servers: list[McpServerConfig]
    categories: list[str]
    domains_per_category: int = Field(ge=1)
    tools_per_domain: int = Field(ge=1)
    include_env_tools: bool
    dedup_method: Literal["embedding", "lexical"]
    dedup_threshold: float = Field(gt=0, le=1)


class SimulationConfig(BaseModel):
    """Agents, tasks and trajectories on spec-only tools run by the stateful simulator."""

    model_config = ConfigDict(extra="forbid")
    num_agents: int = Field(ge=1)
    min_agent_tools: int = Field(ge=1)
    max_agent_tools: int = Field(ge=1)
    num_tasks: int = Field(ge=0)
    trajectories_per_task: int = Field(ge=1)
    max_steps: int = Field(ge=1)
    p_error: float = Field(ge=0, le=1)
    p_partial: float = Field(ge=0, le=1)
    p_edge: float = Field(ge=0, le=1)
    agent_wrong_arg_prob: float = Field(ge=0, le=1)
    max_retries: int = Field(ge=0)
    max_turns: int = Field(ge=2)
    live_tasks: int = Field(default=0, ge=0, description="extra tasks on one agent per live MCP server (its harvested "
                            "tools), executed for real; caps live trajectories at live_tasks * trajectories_per_task")

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.min_agent_tools > self.max_agent_tools:
            raise ValueError("min_agent_tools must be <= max_agent_tools")
        if self.p_error + self.p_partial + self.p_edge > 1:
            raise ValueError("p_error + p_partial + p_edge must be <= 1")
        return self


class RolesConfig(BaseModel):
    """Which named backend (a key of the backends mapping built from the `llm` section) plays each LLM role;
    null keeps the offline rule-based (or scripted) role."""

    model_config = ConfigDict(extra="forbid")
    tool_generator: str | None
    user: str | None
    tool_simulator: str | None
    judge: str | None
    judge_votes: int = Field(ge=1)
    json_retries: int = Field(ge=0)
    temperature: float = Field(ge=0)
    max_tokens: int = Field(ge=1)
    agent: str | None = Field(default=None, description="backend of the agent in every rollout (executable "
                              "environments and simulated tools); null: the scripted agents")
    judge_calibration: int = Field(default=0, ge=0, description="environment trajectories the LLM judge also scores, "
                                   "compared with their state verdict (agreement, precision, recall); 0: off")

    @model_validator(mode="after")
    def _check(self) -> RolesConfig:
        if self.judge_votes % 2 == 0:
            raise ValueError("judge_votes must be odd so the majority is defined")
        if self.tool_simulator is not None and self.judge is None:
            raise ValueError("an LLM tool_simulator needs an LLM judge: the rule judge checks values of the rule simulator")
        if self.judge_calibration and self.judge is None:
            raise ValueError("judge_calibration needs an LLM judge to calibrate")
        return self
