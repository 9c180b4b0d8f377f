"""The spec-only half end to end: repository -> agents -> rubric tasks -> simulated trajectories -> judge,
plus shard invariance and the LLM roles wired through generate_tool_data."""

import json
import random
import re

import pytest
from pydantic import ValidationError

from k2core.agentic import AgenticConfig, generate_tool_data
from k2core.agentic.evolve import closed_object, template_tools
from k2core.agentic.generate import plan_tool_data
from k2core.agentic.repo_agents import sample_agents
from k2core.agentic.repository import RepoTool
from k2core.agentic.sim_tasks import generate_sim_task, sample_arguments
from k2core.chat import normalize_messages, parse, render
from k2core.llm import ChatRequest, ChatResponse, Usage

PROP = {"type": "string", "description": "x"}


def mcp_file(tmp_path):
    servers = []
    for sid, (label, domain, names) in enumerate([
        ("Finance", "Billing Desk", ["get_invoice", "list_invoices", "create_payment", "refund_payment"]),
        ("Weather", "City Weather", ["get_forecast", "get_alerts", "list_stations"]),
        ("Development Tools", "Issue Tracker", ["create_issue", "get_issue", "update_issue", "close_issue", "search_issues"]),
    ]):
        tools = [{"name": n, "description": f"{n.replace('_', ' ')} in {domain}",
                  "input_schema": {"type": "object", "properties": {"item_id": PROP, "limit": {"type": "integer", "minimum": 1, "maximum": 9}},
                                   "required": ["item_id"]}} for n in names]
        servers.append({"server_id": sid, "server_name": domain, "primary_label": label, "custom_label": domain, "tools": tools})
    path = tmp_path / "servers.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in servers))
    return str(path)


def config(path, **over):
    base = dict(
        envs=["retail"], num_tasks=4, trajectories_per_task=1, min_goals=1, max_goals=1, personas=["terse", "chatty", "guarded"],
        p_transient=0.1, p_edge=0.05, agent_wrong_arg_prob=0.1, agent_extra_write_prob=0.1, agent_missing_tool_prob=0.1,
        max_turns=20, test_fraction=0.25,
        repository=dict(mcp_path=path, max_mcp_tools=100, live_servers=[], categories=[], domains_per_category=2,
                        tools_per_domain=4, include_env_tools=True, dedup_method="lexical", dedup_threshold=0.95),
        simulation=dict(num_agents=6, min_agent_tools=2, max_agent_tools=5, num_tasks=30, trajectories_per_task=2, max_steps=3,
                        p_error=0.15, p_partial=0.1, p_edge=0.1, agent_wrong_arg_prob=0.1, max_retries=2, max_turns=16),
    )
    return AgenticConfig(**{**base, **over})


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return mcp_file(tmp_path_factory.mktemp("mcp"))


@pytest.fixture(scope="module")
def data(path):
    return generate_tool_data(config(path), seed=0)


def test_config_sections_are_strict(path):
    with pytest.raises(ValidationError, match="repository"):
        AgenticConfig(**{**config(path).model_dump(), "repository": None})
    with pytest.raises(ValidationError, match="extra"):
        config(path, simulation={**config(path).simulation.model_dump(), "typo": 1})
    with pytest.raises(ValidationError, match="odd"):
        config(path, roles=dict(tool_generator=None, user=None, tool_simulator=None, judge="m", judge_votes=2, json_retries=1,
                                temperature=0.0, max_tokens=64))


def test_plan_mixes_provenances_and_agents_differ(path):
    plan = plan_tool_data(config(path), seed=0)
    report = plan.repository_report
    assert set(report["kept"]) == {"mcp", "env", "synthetic"} and report["dedup_method"] == "lexical"
    assert report["mcp"]["tools_valid"] == 12 and len({t.name for t in plan.tools}) == len(plan.tools)
    assert len({a.system_prompt for a in plan.agents}) > 3 and len({tuple(a.tools) for a in plan.agents}) == len(plan.agents)
    for task in plan.sim_tasks:
        assert {c["name"] for c in task.plan} <= set(task.agent.tools) and task.rubric()["checkpoints"] == task.plan
    assert max(len(t.plan) for t in plan.sim_tasks) > 1


def test_multi_step_tasks_chain_created_records():
    tools = {f"it_{verb}_issue": RepoTool(name=f"it_{verb}_issue", description=desc, parameters=closed_object(props, req),
                                          output_description=out, category="Dev", domain="Issues", provenance="synthetic", source="t")
             for verb, desc, props, req, out in template_tools("issue")}
    agent = sample_agents(list(tools.values()), 1, len(tools), len(tools), seed=1)[0]
    chained = 0
    for s in range(40):
        task = generate_sim_task(agent, tools, f"t{s}", s, 3, "terse")
        for c in task.plan:
            assert sample_arguments(tools[c["name"]], random.Random(0)) is not None
        for step in re.findall(r"created in step (\d+)", task.instruction):
            chained += 1
            assert "_create_" in task.plan[int(step) - 1]["name"]
    assert chained > 0


def test_simulated_trajectories_are_judged_and_kept(data):
    _, sft, stats = data
    sim = stats["simulated"]
    assert sim["generated"] == 2 * sim["tasks"] and 0 < sim["kept"] < sim["generated"]
    assert set(sim["pass_rate"]) == {"format", "completed", "checkpoints", "outputs", "honesty"}
    assert sum(sim["first_failure"].values()) == sim["generated"] - sim["kept"]
    assert all(sim["tool_call_outcomes"][o] > 0 for o in ("ok", "transient", "partial", "edge"))
    assert stats["judged_total"] == stats["generated"] + sim["generated"] and stats["kept_total"] == len(sft)
    rows = sft[sft["example_id"].str.startswith("tool-sim-")]
    assert len(rows) == sim["kept"]
    for row in rows.itertuples():
        messages, tools = json.loads(row.messages), json.loads(row.tools)
        assert parse(render(messages, tools)) == (normalize_messages(messages), tools)


def test_same_seed_same_data_whatever_the_sharding(path, data):
    sharded = generate_tool_data(config(path, num_shards=3), seed=0)
    assert sharded[1].equals(data[1]) and sharded[2] == data[2]


class RubricJudge:
    """A deterministic 'judge model': passes a trajectory iff its transcript reports no failure."""

    backend_id = "judge"

    def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[0]["content"]
        convo = prompt.split("Conversation:\n")[1]
        ok = "failed:" not in convo and "rubric" in prompt.lower()
        return ChatResponse(message={"role": "assistant", "content": json.dumps({"passed": ok, "score": float(ok), "reasons": []})},
                            usage=Usage(prompt_tokens=len(prompt) // 4, completion_tokens=8))


def test_llm_judge_role_through_generate(path):
    roles = dict(tool_generator=None, user=None, tool_simulator=None, judge="judge-model", judge_votes=3, json_retries=1,
                 temperature=0.0, max_tokens=64)
    cfg = config(path, roles=roles, simulation={**config(path).simulation.model_dump(), "num_tasks": 8})
    _, _, stats = generate_tool_data(cfg, seed=0, backends={"judge-model": RubricJudge()})
    sim = stats["simulated"]
    assert set(sim["pass_rate"]) == {"format", "completed", "llm_judge"}
    assert sim["llm"]["judge_votes"] == 3 * sim["generated"] and sim["llm"]["judge_calls"] == 3 * sim["generated"]
    assert 0 < sim["kept"] < sim["generated"]
    with pytest.raises(ValueError, match="judge-model"):
        generate_tool_data(cfg, seed=0, backends={})


class WorldUserJudge:
    """One deterministic 'model' for three roles: as tool simulator it counts calls in the state, as user it states
    the request once and then stops, as judge it passes trajectories without failures."""

    backend_id = "world-user-judge"

    def complete(self, request: ChatRequest) -> ChatResponse:
        first = request.messages[0]["content"]
        if first.startswith("You simulate a software tool"):
            state = json.loads(first.split("World state (JSON): ")[1].split("\n")[0])
            state["calls"] = state.get("calls", 0) + 1
            text = json.dumps({"result": {"ok": True, "call": state["calls"]}, "state": state})
        elif first.startswith("You grade"):
            ok = "failed:" not in first.split("Conversation:")[1]
            text = json.dumps({"passed": ok, "score": float(ok), "reasons": []})
        elif len(request.messages) <= 2:
            text = "Hello, " + first.split("Your task: ")[1].split(" Stay in character")[0]
        else:
            text = "Thanks! ###STOP###"
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=5, completion_tokens=5))


def test_llm_user_simulator_and_judge_roles_through_generate(path):
    roles = dict(tool_generator=None, user="m", tool_simulator="m", judge="m", judge_votes=1, json_retries=0,
                 temperature=0.0, max_tokens=64)
    cfg = config(path, roles=roles, simulation={**config(path).simulation.model_dump(), "num_tasks": 6})
    _, sft, stats = generate_tool_data(cfg, seed=0, backends={"m": WorldUserJudge()})
    sim = stats["simulated"]
    assert sim["llm"]["tool_simulator_calls"] > 0 and sim["llm"]["tool_simulator_failures"] == 0
    assert sim["pass_rate"]["completed"] == 1.0 and 0 < sim["kept"]
    for row in sft[sft["example_id"].str.startswith("tool-sim-")].itertuples():
        messages = json.loads(row.messages)
        assert messages[1]["content"].startswith("Hello, You want the assistant")
        results = [m["content"] for m in messages if m["role"] == "tool" and not m["content"].startswith("Error")]
        assert results and all(json.loads(r)["ok"] for r in results)
    with pytest.raises(ValidationError, match="LLM judge"):
        config(path, roles={**roles, "judge": None})
