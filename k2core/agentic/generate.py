"""Entry point for the synth stage: tasks, judged trajectories and filter statistics for tool-use SFT.

Work is planned once (`plan_tool_data`: tasks, tool repository, agents, simulated-tool tasks), cut into shards of
trajectory jobs (`Shard`, plain pydantic data), run shard by shard (`run_shard`, a pure function of config and
shard, each trajectory seeded by its own id so sharding never changes the data), and merged (`merge_shards`).
`generate_tool_data` runs the shards in-process; `tasks/agentic.py` maps the same `run_shard` as Prefect tasks.

Live MCP tools (`repository.live_servers`) run for real: each shard that needs them starts the servers once
(`harvest.LiveSandbox`; git on a populated temporary repository restored before every replay) and a task using them
is judged against a gold replay of its plan on the same fresh state: same final repository state, the gold outputs
reported, and every live result relayed in the answer. Everything stays seeded except the time server's results,
which follow the wall clock: those are judged by success and relay, never by value, and rows holding them differ
between runs. A server that fails to start leaves its tasks simulated, counted by reason in the statistics.

With `roles.agent` set, a model (`llm_agent.AgentRole`) plays the agent in every rollout instead of the scripted
agents, judged the same way; with `roles.judge_calibration` > 0 the LLM judge also scores that many environment
trajectories and the statistics report its agreement with their state verdict (`calibration`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from k2core.agentic.agents import PlanAgent, ScriptedAgent, sample_agent
from k2core.agentic.calibration import Confusion, judge_env_episode
from k2core.agentic.catalog import build_repository
from k2core.agentic.domains import ENVIRONMENTS, make_env
from k2core.agentic.faults import FaultInjector
from k2core.agentic.harvest import LiveSandbox, SandboxExecutor
from k2core.agentic.judge import FILTERS, Verdict, gold_hash, judge_episode
from k2core.agentic.llm_agent import AGENT_COUNTERS, AgentRole
from k2core.agentic.llm_roles import JsonAsker, LLMJudge, LLMUser
from k2core.agentic.repo_agents import RepoAgent, sample_agents
from k2core.agentic.repository import RepoTool, tools_frame
from k2core.agentic.rollout import Episode, Policy, run_episode
from k2core.agentic.settings import RepositoryConfig, RolesConfig, SimulationConfig
from k2core.agentic.sim_judge import LLM_FILTERS, RULE_FILTERS, SimVerdict, final_text, judge_sim_episode
from k2core.agentic.sim_tasks import SimTask, generate_sim_task, salient
from k2core.agentic.simulator import Engine, Executor, LLMEngine, ModeInjector, RuleEngine, SimWorld
from k2core.agentic.tasks import Task, generate_tasks, task_to_row
from k2core.agentic.users import PERSONAS, RequestUser, ScriptedUser
from k2core.llm import ChatBackend

TASK_COLUMNS = ["task_id", "env", "instruction", "gold_actions", "initial_state", "rubric", "split"]
SFT_COLUMNS = ["example_id", "source", "messages", "tools"]
OUTCOMES = ("ok", "transient", "partial", "edge", "invalid")
LIVE_PROMPT = ("You are a careful automation agent with the {server} tools of this workstation. Use the tools instead of "
               "guessing, do only what the user asks, and quote what the tools return.")


class AgenticConfig(BaseModel):
    """How much tool-use data to make and how hard the simulated world is; `repository`, `simulation` and `roles`
    switch on the spec-only half of the pipeline (absent: executable environments only)."""

    model_config = ConfigDict(extra="forbid")
    envs: list[str] = Field(min_length=1)
    num_tasks: int = Field(ge=1)
    trajectories_per_task: int = Field(ge=1)
    min_goals: int = Field(ge=1)
    max_goals: int = Field(ge=1)
    personas: list[str] = Field(min_length=1)
    p_transient: float = Field(ge=0, le=1)
    p_edge: float = Field(ge=0, le=1)
    agent_wrong_arg_prob: float = Field(ge=0, le=1)
    agent_extra_write_prob: float = Field(ge=0, le=1)
    agent_missing_tool_prob: float = Field(ge=0, le=1)
    max_turns: int = Field(ge=2)
    test_fraction: float = Field(ge=0, lt=1)
    num_shards: int | None = Field(default=None, ge=1, description="trajectory shards to fan out; None: one")
    repository: RepositoryConfig | None = None
    simulation: SimulationConfig | None = None
    roles: RolesConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> AgenticConfig:
        unknown = set(self.envs) - set(ENVIRONMENTS)
        if unknown:
            raise ValueError(f"unknown envs {sorted(unknown)}; choose from {sorted(ENVIRONMENTS)}")
        bad = set(self.personas) - set(PERSONAS)
        if bad:
            raise ValueError(f"unknown personas {sorted(bad)}; choose from {list(PERSONAS)}")
        if self.min_goals > self.max_goals:
            raise ValueError(f"min_goals ({self.min_goals}) must be <= max_goals ({self.max_goals})")
        if self.p_transient + self.p_edge > 1:
            raise ValueError("p_transient + p_edge must be <= 1")
        if self.simulation is not None and self.repository is None:
            raise ValueError("simulation needs a repository section (the tools the agents use)")
        return self


class EnvJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Task
    index: int
    persona: str
    gold_hash: str
    calibrate: bool = Field(default=False, description="the LLM judge also scores this trajectory (judge_calibration)")


class SimJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: SimTask
    index: int


class Shard(BaseModel):
    """A slice of trajectory jobs with everything needed to run them anywhere (tools travel with the shard)."""

    model_config = ConfigDict(extra="forbid")
    shard_id: int
    seed: int
    env_jobs: list[EnvJob]
    sim_jobs: list[SimJob]
    tools: list[RepoTool]


class ShardResult(BaseModel):
    """Kept SFT rows and the counters that merge into the stage statistics."""

    model_config = ConfigDict(extra="forbid")
    env_rows: list[dict[str, str]]
    sim_rows: list[dict[str, str]]
    env: dict[str, dict[str, float]]
    sim: dict[str, dict[str, float]]
    llm: dict[str, int]
    live: dict[str, dict[str, Any]] = Field(default_factory=dict, description="live-execution counters; start_failures: server -> reason")
    agent: dict[str, int] = Field(default_factory=dict, description="LLM agent counters (llm_agent.AGENT_COUNTERS)")
    calibration: dict[str, int] = Field(default_factory=dict, description="judge calibration counts (calibration.Confusion)")


class ToolPlan(BaseModel):
    """Everything decided before any trajectory runs."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[Task]
    tools: list[RepoTool]
    agents: list[RepoAgent]
    sim_tasks: list[SimTask]
    shards: list[Shard]
    repository_report: dict[str, Any]
    sim_tasks_skipped: int


Backends = Mapping[str, ChatBackend]


def role_backend(cfg: AgenticConfig, role: str, backends: Backends | None) -> ChatBackend | None:
    """The backend params name for `role`, or None (offline rule-based role); a name without a backend is an error."""
    name = getattr(cfg.roles, role) if cfg.roles else None
    if name is None:
        return None
    if not backends or name not in backends:
        raise ValueError(f"role {role} names backend {name!r}, but only {sorted(backends or {})} were provided")
    return backends[name]


def role_asker(cfg: AgenticConfig, role: str, backends: Backends | None, seed: int) -> JsonAsker | None:
    """A strict-JSON asker on the role's backend, or None when the role stays offline."""
    backend = role_backend(cfg, role, backends)
    if backend is None or cfg.roles is None:
        return None
    return JsonAsker(backend, cfg.roles.json_retries, cfg.roles.temperature, cfg.roles.max_tokens, seed)


def role_agent(cfg: AgenticConfig, backends: Backends | None) -> AgentRole | None:
    """The LLM agent role when params name a backend for `agent`, or None (scripted agents)."""
    backend = role_backend(cfg, "agent", backends)
    if backend is None or cfg.roles is None:
        return None
    return AgentRole(backend, cfg.roles.temperature, cfg.roles.max_tokens)


def calibration_jobs(n_jobs: int, n: int) -> set[int]:
    """Indices of `n` environment jobs spread evenly over all `n_jobs` (all of them if fewer), for judge calibration."""
    return {i * n_jobs // n for i in range(n)} if n < n_jobs else set(range(n_jobs))


def plan_tool_data(cfg: AgenticConfig, seed: int, backends: Backends | None = None) -> ToolPlan:
    """Tasks for the environments, the tool repository, agents and simulated-tool tasks, cut into shards."""
    tasks = generate_tasks(cfg.envs, cfg.num_tasks, cfg.min_goals, cfg.max_goals, cfg.personas, cfg.test_fraction, seed)
    train = [t for t in tasks if t.split == "train"]
    env_jobs = [EnvJob(task=t, index=j, persona=cfg.personas[(i + j) % len(cfg.personas)], gold_hash=gold_hash(t))
                for i, t in enumerate(train) for j in range(cfg.trajectories_per_task)]
    for k in calibration_jobs(len(env_jobs), cfg.roles.judge_calibration if cfg.roles else 0):
        env_jobs[k].calibrate = True
    tools: list[RepoTool] = []
    agents: list[RepoAgent] = []
    sim_tasks: list[SimTask] = []
    report: dict[str, Any] = {}
    if cfg.repository is not None:
        tools, report = build_repository(cfg.repository, seed, role_asker(cfg, "tool_generator", backends, seed))
    sim = cfg.simulation
    by_name = {t.name: t for t in tools}
    skipped = 0
    if sim is not None:
        if not tools:
            raise ValueError("simulation needs at least one tool in the repository")
        agents = sample_agents(tools, sim.num_agents, sim.min_agent_tools, sim.max_agent_tools, seed)
        rng = random.Random(f"{seed}:sim-tasks")
        for i in range(sim.num_tasks):
            task = generate_sim_task(agents[i % len(agents)], by_name, f"sim-{seed}-{i:05d}", rng.randrange(2**31),
                                     sim.max_steps, cfg.personas[i % len(cfg.personas)])
            if task is None:
                skipped += 1  # no tool of the agent accepted synthesized arguments
            else:
                sim_tasks.append(task)
        live_agents = live_server_agents(tools, seed) if sim.live_tasks else []
        agents += live_agents
        rng = random.Random(f"{seed}:live-tasks")
        for i in range(sim.live_tasks if live_agents else 0):
            task = generate_sim_task(live_agents[i % len(live_agents)], by_name, f"sim-{seed}-live-{i:04d}", rng.randrange(2**31),
                                     sim.max_steps, cfg.personas[i % len(cfg.personas)])
            if task is None:
                skipped += 1
            else:
                sim_tasks.append(task)
    sim_jobs = [SimJob(task=t, index=j) for t in sim_tasks for j in range(sim.trajectories_per_task)] if sim else []
    n = cfg.num_shards or 1
    shards = []
    for k in range(n):
        mine = sim_jobs[k * len(sim_jobs) // n:(k + 1) * len(sim_jobs) // n]
        needed = dict.fromkeys(name for job in mine for name in job.task.agent.tools)
        shards.append(Shard(shard_id=k, seed=seed, env_jobs=env_jobs[k * len(env_jobs) // n:(k + 1) * len(env_jobs) // n],
                            sim_jobs=mine, tools=[by_name[x] for x in needed]))
    return ToolPlan(tasks=tasks, tools=tools, agents=agents, sim_tasks=sim_tasks, shards=shards, repository_report=report,
                    sim_tasks_skipped=skipped)


def live_server_agents(tools: Sequence[RepoTool], seed: int) -> list[RepoAgent]:
    """One agent per live MCP server, holding all its harvested tools (so live tasks exist whatever the sampling)."""
    by_server: dict[str, list[RepoTool]] = defaultdict(list)
    for t in tools:
        if t.provenance == "mcp_live":
            by_server[t.source.removeprefix("mcp_live:")].append(t)
    return [RepoAgent(name=f"agent-{seed}-live-{server}", category=ts[0].category, domain=ts[0].domain,
                      system_prompt=LIVE_PROMPT.format(server=server), tools=[t.name for t in ts])
            for server, ts in sorted(by_server.items())]


def rollout_env(task: Task, cfg: AgenticConfig, seed: str, persona: str, llm_agent: AgentRole | None = None) -> tuple[Episode, str]:
    """One trajectory on `task` of a freshly sampled agent profile (system prompt, tool subset), played by the
    scripted agent or, given `llm_agent`, by its model; returns the episode and the agent name."""
    rng = random.Random(seed)
    env = make_env(task.env)
    env.reset(task.seed, db=task.initial_db)
    profile = sample_agent(env, rng, cfg.agent_wrong_arg_prob, cfg.agent_extra_write_prob, cfg.agent_missing_tool_prob)
    agent: Policy = (ScriptedAgent(profile, task, env, rng) if llm_agent is None
                     else llm_agent.policy(env.tool_specs(profile.tools), random.Random(f"{seed}:agent").randrange(2**31)))
    user = ScriptedUser(task, persona, env.slot_descriptions)
    env.reset(task.seed, db=task.initial_db, faults=FaultInjector(cfg.p_transient, cfg.p_edge, rng.randrange(2**31)))
    return run_episode(env, agent, user, profile.system_prompt, profile.tools, cfg.max_turns), profile.name


def rollout_simulated(task: SimTask, tools: dict[str, RepoTool], sim: SimulationConfig, seed: str, engine: Engine,
                      user_backend: ChatBackend | None, roles: RolesConfig | None,
                      live: Mapping[str, Executor] | None = None, llm_agent: AgentRole | None = None) -> Episode:
    """One trajectory of the plan agent (or, given `llm_agent`, of its model) on the stateful simulator (fresh
    world, modes seeded by the trajectory id); tools in `live` run on their real server instead."""
    rng = random.Random(seed)
    world = SimWorld([tools[n] for n in task.agent.tools], engine, ModeInjector(sim.p_error, sim.p_partial, sim.p_edge, rng.randrange(2**31)),
                     live=live)
    agent: Policy = (PlanAgent(task.plan, sim.max_retries, sim.agent_wrong_arg_prob, rng) if llm_agent is None
                     else llm_agent.policy(world.tool_specs(task.agent.tools), random.Random(f"{seed}:agent").randrange(2**31)))
    if user_backend is not None and roles is not None:
        user: Any = LLMUser(user_backend, task.instruction, task.persona, rng.randrange(2**31), roles.temperature, roles.max_tokens)
    else:
        user = RequestUser(task.instruction, task.persona)
    return run_episode(world, agent, user, task.agent.system_prompt, task.agent.tools, sim.max_turns)


@dataclass
class LiveGold:
    """A plan replayed fault-free on the live servers from the fresh sandbox state."""

    outputs: list[str]
    fingerprint: str
    errors: int


def gold_replay(task: SimTask, tools: dict[str, RepoTool], executors: Mapping[str, SandboxExecutor], sandbox: LiveSandbox) -> LiveGold:
    """The values a correct answer reports (the results of clock-dependent tools, those without a sandbox repository,
    excluded) and the repository state a correct trajectory leaves."""
    sandbox.reset()
    world = SimWorld([tools[n] for n in task.agent.tools], RuleEngine(), ModeInjector(0.0, 0.0, 0.0, 0), live=executors)
    outputs: list[str] = []
    errors = 0
    for call in task.plan:
        result = world.step(call)
        errors += result.startswith("Error")
        ex = executors.get(call["name"])
        if ex is None or ex.real is not None:
            outputs += [v for v in salient(result)[:1] if v not in outputs]
    return LiveGold(outputs, sandbox.fingerprint(), errors)


def live_match(episode: Episode, gold: LiveGold, fingerprint: str, executors: Mapping[str, SandboxExecutor]) -> bool:
    """The trajectory left the gold repository state and its answer relays every live result it got."""
    said = final_text(episode)
    relayed = all(v in said for r in episode.calls if r.applied and r.name in executors for v in salient(r.result))
    return relayed and fingerprint == gold.fingerprint


class LiveRunner(AbstractContextManager["LiveRunner"]):
    """Live execution for one shard: starts the servers its jobs need (once), gives each live job its gold replay
    (cached per task) on a fresh sandbox, adds the `live_match` check when live servers are configured, and counts
    live trajectories, their checks and fallbacks to simulation."""

    def __init__(self, cfg: AgenticConfig, shard: Shard) -> None:
        self.on = bool(cfg.repository and cfg.repository.live_servers)
        self.server_of = {t.name: t.source.removeprefix("mcp_live:") for t in shard.tools if t.provenance == "mcp_live"}
        needed = {self.server_of[c["name"]] for job in shard.sim_jobs for c in job.task.plan if c["name"] in self.server_of}
        self.configs = [s for s in cfg.repository.live_servers if s.name in needed] if cfg.repository and self.on else []
        self.tools = shard.tools
        self.sandbox: LiveSandbox | None = None
        self.executors: dict[str, SandboxExecutor] = {}
        self.golds: dict[str, LiveGold] = {}
        self.counts: dict[str, Counter] = {"passed": Counter(), "totals": Counter()}
        self._stack = ExitStack()

    def __enter__(self) -> LiveRunner:
        if self.configs:
            self.sandbox = self._stack.enter_context(LiveSandbox(self.configs))
            self.executors = self.sandbox.executors(self.tools)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def prepare(self, task: SimTask, tools: dict[str, RepoTool]) -> tuple[SimTask, LiveGold | None]:
        """(task with the gold outputs, gold) on a fresh sandbox when every live tool of its plan has a running
        server; else (task, None): simulated, counted as a fallback if the plan uses live tools."""
        used = [c["name"] for c in task.plan if c["name"] in self.server_of]
        if not used or self.sandbox is None or not all(n in self.executors for n in used):
            self.counts["totals"]["simulated_fallback"] += bool(used)
            return task, None
        if task.task_id not in self.golds:
            self.golds[task.task_id] = gold_replay(task, tools, self.executors, self.sandbox)
        gold = self.golds[task.task_id]
        self.sandbox.reset()
        return task.model_copy(update={"outputs": gold.outputs}), gold

    def judge(self, verdict: Verdict, episode: Episode, gold: LiveGold | None) -> Verdict:
        """The verdict with `live_match` last (true for jobs that did not run live), counted for live jobs."""
        if not self.on:
            return verdict
        assert isinstance(verdict, SimVerdict)
        ok = live_match(episode, gold, self.sandbox.fingerprint(), self.executors) if gold and self.sandbox else True
        verdict = SimVerdict({**verdict.checks, "live_match": ok}, (*verdict.order, "live_match"))
        if gold is not None:
            self.counts["passed"].update(f for f, passed in verdict.checks.items() if passed)
            real = sum(1 for r in episode.calls if r.name in self.executors and r.outcome != "transient")
            self.counts["totals"].update(generated=1, kept=int(verdict.passed), gold_replay_errors=int(gold.errors > 0), real_calls=real)
        return verdict

    def counters(self) -> dict[str, dict[str, Any]]:
        """For `ShardResult.live`: check and total counters, and the reason each server failed to start."""
        return {k: dict(v) for k, v in self.counts.items()} | {"start_failures": dict(self.sandbox.failures) if self.sandbox else {}}


def _tally(counters: dict[str, Counter], checks: dict[str, bool], first: str | None, reward: float, episode: Episode) -> None:
    counters["passed"].update(f for f, ok in checks.items() if ok)
    counters["first_failure"][first or "kept"] += 1
    counters["outcomes"].update(r.outcome for r in episode.calls)
    counters["totals"].update(generated=1, reward=reward)


def _row(example_id: str, episode: Episode) -> dict[str, str]:
    return {"example_id": example_id, "source": "tool", "messages": json.dumps(episode.messages), "tools": json.dumps(episode.tools)}


def run_shard(cfg: AgenticConfig, shard: Shard, backends: Backends | None = None) -> ShardResult:
    """Roll out and judge every job of the shard; keep the rows that pass every filter."""
    env_c: dict[str, Counter] = {k: Counter() for k in ("passed", "first_failure", "outcomes", "totals")}
    sim_c: dict[str, Counter] = {k: Counter() for k in ("passed", "first_failure", "outcomes", "totals")}
    env_rows, sim_rows = [], []
    judge_asker = role_asker(cfg, "judge", backends, shard.seed)
    judge = LLMJudge(judge_asker, cfg.roles.judge_votes) if judge_asker and cfg.roles else None
    agent = role_agent(cfg, backends)
    calibration = Confusion()
    for job in shard.env_jobs:
        episode, _ = rollout_env(job.task, cfg, f"{shard.seed}:{job.task.task_id}:{job.index}", job.persona, agent)
        verdict = judge_episode(job.task, episode, job.gold_hash)
        if job.calibrate:
            assert judge is not None, "judge_calibration needs the judge role (RolesConfig checks this)"
            calibration.add(verdict.passed, judge_env_episode(judge, job.task, episode, job.task.seed + job.index))
        _tally(env_c, verdict.checks, verdict.first_failure, verdict.reward, episode)
        if verdict.passed:
            env_rows.append(_row(f"tool-{job.task.task_id}-{job.index}", episode))
    tools = {t.name: t for t in shard.tools}
    sim_asker = role_asker(cfg, "tool_simulator", backends, shard.seed)
    user_backend = role_backend(cfg, "user", backends)
    votes_yes = votes_total = 0
    with LiveRunner(cfg, shard) as runner:
        for sjob in shard.sim_jobs:
            assert cfg.simulation is not None
            seed = f"{shard.seed}:{sjob.task.task_id}:{sjob.index}"
            engine: Engine = LLMEngine(sim_asker, sjob.task.seed + sjob.index) if sim_asker else RuleEngine()
            task, gold = runner.prepare(sjob.task, tools)
            live = runner.executors if gold else None
            episode = rollout_simulated(task, tools, cfg.simulation, seed, engine, user_backend, cfg.roles, live, agent)
            verdict, votes = judge_sim_episode(task, episode, judge, sjob.task.seed + sjob.index)
            verdict = runner.judge(verdict, episode, gold)
            votes_total += len(votes)
            votes_yes += sum(1 for v in votes if v["passed"])
            _tally(sim_c, verdict.checks, verdict.first_failure, verdict.reward, episode)
            if verdict.passed:
                sim_rows.append(_row(f"tool-{sjob.task.task_id}-{sjob.index}", episode))
    llm = {"judge_votes": votes_total, "judge_votes_passed": votes_yes}
    for role, asker in (("tool_simulator", sim_asker), ("judge", judge_asker)):
        if asker is not None:
            llm.update({f"{role}_calls": asker.calls, f"{role}_failures": asker.failures,
                        f"{role}_prompt_tokens": asker.prompt_tokens, f"{role}_completion_tokens": asker.completion_tokens})
    as_dict = lambda c: {k: dict(v) for k, v in c.items()}  # noqa: E731
    return ShardResult(env_rows=env_rows, sim_rows=sim_rows, env=as_dict(env_c), sim=as_dict(sim_c), llm=llm, live=runner.counters(),
                       agent=dict(agent.counts) if agent else {}, calibration=calibration.model_dump())


def _filter_stats(counts: dict[str, Counter], filters: Sequence[str], kept: int) -> dict[str, Any]:
    generated = int(counts["totals"]["generated"])
    survivors, cascade = generated, {}
    for f in filters:
        survivors -= counts["first_failure"][f]
        cascade[f] = survivors / generated if generated else 0.0
    return {
        "generated": generated,
        "kept": kept,
        "keep_rate": kept / generated if generated else 0.0,
        "mean_reward": counts["totals"]["reward"] / generated if generated else 0.0,
        "pass_rate": {f: counts["passed"][f] / generated if generated else 0.0 for f in filters},
        "cumulative_pass_rate": cascade,
        "first_failure": {f: counts["first_failure"][f] for f in filters},
        "tool_call_outcomes": {o: counts["outcomes"][o] for o in OUTCOMES},
    }


def merge_shards(cfg: AgenticConfig, plan: ToolPlan, results: Sequence[ShardResult]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Environment rows then simulated-tool rows, each in shard order (so sharding never reorders), and the
    counters summed into the stage statistics."""
    tasks_df = pd.DataFrame([task_to_row(t) for t in plan.tasks], columns=TASK_COLUMNS)
    env_rows = [r for res in results for r in res.env_rows]
    rows = env_rows + [r for res in results for r in res.sim_rows]
    env_c: dict[str, Counter] = {k: sum((Counter(res.env[k]) for res in results), Counter()) for k in ("passed", "first_failure", "outcomes", "totals")}
    sim_c: dict[str, Counter] = {k: sum((Counter(res.sim[k]) for res in results), Counter()) for k in ("passed", "first_failure", "outcomes", "totals")}
    train = sum(1 for t in plan.tasks if t.split == "train")
    env_kept = len(env_rows)
    stats: dict[str, Any] = {"tasks": len(plan.tasks), "train_tasks": train, "test_tasks": len(plan.tasks) - train,
                             **_filter_stats(env_c, FILTERS, env_kept)}
    stats["tool_call_outcomes"] = {o: stats["tool_call_outcomes"][o] for o in ("ok", "transient", "edge", "invalid")}
    if cfg.simulation is not None:
        live_on = bool(cfg.repository and cfg.repository.live_servers)
        filters = (LLM_FILTERS if cfg.roles and cfg.roles.judge else RULE_FILTERS) + ("live_match",) * live_on
        llm = {k: sum(res.llm.get(k, 0) for res in results) for k in dict.fromkeys(k for res in results for k in res.llm)}
        stats["simulated"] = {"agents": len(plan.agents), "tasks": len(plan.sim_tasks), "tasks_skipped": plan.sim_tasks_skipped,
                              **_filter_stats(sim_c, filters, len(rows) - env_kept), "llm": llm}
        if live_on:
            stats["simulated"]["live"] = _live_stats(plan, results, filters)
    if plan.repository_report:
        stats["repository"] = plan.repository_report
    stats.update(_role_stats(cfg, results))
    stats["judged_total"] = stats["generated"] + stats.get("simulated", {}).get("generated", 0)
    stats["kept_total"] = len(rows)
    return tasks_df, pd.DataFrame(rows, columns=SFT_COLUMNS), stats


def _role_stats(cfg: AgenticConfig, results: Sequence[ShardResult]) -> dict[str, Any]:
    """`llm_agent`: the LLM agent's counters over every trajectory (when the agent role is on); `judge_calibration`:
    the LLM judge against the state verdict (when judge_calibration > 0)."""
    out: dict[str, Any] = {}
    if cfg.roles and cfg.roles.agent:
        totals = Counter(dict.fromkeys(AGENT_COUNTERS, 0))
        for res in results:
            totals.update(res.agent)
        out["llm_agent"] = dict(totals)
    if cfg.roles and cfg.roles.judge_calibration:
        out["judge_calibration"] = sum((Confusion(**res.calibration) for res in results), Confusion()).metrics()
    return out


def _live_stats(plan: ToolPlan, results: Sequence[ShardResult], filters: Sequence[str]) -> dict[str, Any]:
    """How many simulated-tool trajectories ran on live servers, how they fared, and why any fell back."""
    merged = {k: sum((Counter(res.live.get(k, {})) for res in results), Counter()) for k in ("passed", "totals")}
    failures: dict[str, dict[str, Any]] = {}
    for res in results:
        for server, why in res.live.get("start_failures", {}).items():
            failures.setdefault(server, {"shards": 0, "reason": why})["shards"] += 1
    totals = merged["totals"]
    generated = int(totals["generated"])
    live_names = {t.name for t in plan.tools if t.provenance == "mcp_live"}
    return {
        "agents": sum(1 for a in plan.agents if "-live-" in a.name),
        "tasks": sum(1 for t in plan.sim_tasks if any(c["name"] in live_names for c in t.plan)),
        "generated": generated,
        "kept": int(totals["kept"]),
        "keep_rate": totals["kept"] / generated if generated else 0.0,
        "pass_rate": {f: merged["passed"][f] / generated if generated else 0.0 for f in filters},
        "real_calls": int(totals["real_calls"]),
        "gold_replay_errors": int(totals["gold_replay_errors"]),
        "simulated_fallback": int(totals["simulated_fallback"]),
        "start_failures": failures,
    }


ShardMapper = Callable[[Sequence[Shard]], list[ShardResult]]
AGENT_COLUMNS = ["agent_id", "category", "domain", "system_prompt", "tools"]


@dataclass
class ToolDatasets:
    """All tables of the agentic pipeline: tool_tasks and sft rows (docs/contracts.md), the tool repository
    (`repository.TOOL_COLUMNS`), the agents, and the statistics."""

    tasks: pd.DataFrame
    sft: pd.DataFrame
    tools: pd.DataFrame
    agents: pd.DataFrame
    stats: dict[str, Any]


def generate_tool_datasets(cfg: AgenticConfig, seed: int, backends: Backends | None = None,
                           mapper: ShardMapper | None = None) -> ToolDatasets:
    """Plan, run every shard through `mapper` (default: one after another in this process; `tasks/agentic.py`
    maps them as Prefect tasks) and merge."""
    plan = plan_tool_data(cfg, seed, backends)
    run = mapper or (lambda shards: [run_shard(cfg, s, backends) for s in shards])
    tasks_df, sft_df, stats = merge_shards(cfg, plan, run(plan.shards))
    agents = pd.DataFrame([{"agent_id": a.name, "category": a.category, "domain": a.domain, "system_prompt": a.system_prompt,
                            "tools": json.dumps(a.tools)} for a in plan.agents], columns=AGENT_COLUMNS)
    return ToolDatasets(tasks_df, sft_df, tools_frame(plan.tools), agents, stats)


def generate_tool_data(cfg: AgenticConfig, seed: int, backends: Backends | None = None,
                       mapper: ShardMapper | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Tasks for all splits, judged SFT trajectories (environments and simulated tools) and per-filter statistics."""
    data = generate_tool_datasets(cfg, seed, backends, mapper)
    return data.tasks, data.sft, data.stats
