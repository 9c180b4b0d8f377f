"""The LLM agent role: its logic with deterministic backends written here, its wiring through generate_tool_data for
executable environments and simulated tools, and once end to end through the `openai` backend and a real loopback
server whose model emits tool calls."""

import json
import random

import pytest
from pydantic import ValidationError

from k2core.agentic import generate_tool_data
from k2core.agentic.agents import PlanAgent, ScriptedAgent, oracle_agent
from k2core.agentic.domains import make_env
from k2core.agentic.generate import plan_tool_data
from k2core.agentic.judge import gold_hash, judge_episode
from k2core.agentic.llm_agent import AGENT_COUNTERS, REQUEST_ERROR, AgentRole
from k2core.agentic.rollout import run_episode
from k2core.agentic.tasks import generate_tasks
from k2core.agentic.users import RequestUser, ScriptedUser
from k2core.chat import normalize_messages, parse, render
from k2core.llm import ChatRequest, ChatResponse, OpenAILLMConfig, RequestError, Usage, make_backend
from k2core.llm.messages import assistant_message
from k2core.llm.server import running_server
from tests.test_agentic_simulated import config, mcp_file

ROLES = dict(tool_generator=None, user=None, tool_simulator=None, judge=None, judge_votes=1, json_retries=0,
             temperature=0.5, max_tokens=96, agent="agent-model")


class Replies:
    """A backend that answers with the next of `replies` (a message, or an exception to raise) and keeps the requests."""

    backend_id = "replies"

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return ChatResponse(message=reply, usage=Usage(prompt_tokens=10, completion_tokens=3))


def call(name, arguments):
    return assistant_message("", [(name, arguments)])


@pytest.fixture(scope="module")
def task():
    return generate_tasks(["retail"], 1, 1, 1, ["terse"], 0.0, seed=1)[0]


def episode_with(task, backend, max_turns=12, tools=None):
    env = make_env(task.env)
    env.reset(task.seed, db=task.initial_db)
    names = tools or list(env.tools)
    role = AgentRole(backend, temperature=0.5, max_tokens=64)
    agent = role.policy(env.tool_specs(names), seed=40)
    user = ScriptedUser(task, "terse", env.slot_descriptions)
    return run_episode(env, agent, user, "You are a support agent.", names, max_turns), role.counts


def test_agent_sends_prompt_tools_and_seeds_and_gets_tool_errors_back(task):
    email = task.identity["email"]
    identify = make_env(task.env).identify_tool
    backend = Replies([call("delete_everything", "{}"), call(identify, "{email: oops"),
                       call(identify, json.dumps({"email": email})), {"role": "assistant", "content": "Found you."}])
    episode, counts = episode_with(task, backend, max_turns=6, tools=[identify, "get_user_details"])
    first = backend.requests[0]
    assert first.messages[0] == {"role": "system", "content": "You are a support agent."}
    assert first.messages[1]["role"] == "user" and email in first.messages[1]["content"]
    assert [t["function"]["name"] for t in first.tools] == [identify, "get_user_details"]
    assert first.tools == make_env(task.env).tool_specs([identify, "get_user_details"])
    assert [r.seed for r in backend.requests] == list(range(40, 40 + len(backend.requests)))
    assert {(r.temperature, r.max_tokens) for r in backend.requests} == {(0.5, 64)}
    fed_back = [r.messages[-1]["content"] for r in backend.requests[1:4]]
    assert fed_back[0].startswith("Error: tool 'delete_everything' is not available")
    assert fed_back[1].startswith("Error: invalid arguments: arguments are not valid JSON")
    assert json.loads(fed_back[2])  # the real result of the identification
    assert [r.name for r in episode.calls] == [identify, identify]  # the unavailable tool never reached the env
    assert counts["tool_calls"] == 3 and counts["parse_failures"] == 2 and counts["final_answers"] == counts["turns"] - 3
    assert counts["turns"] == episode.turns == len(backend.requests)
    assert (counts["prompt_tokens"], counts["completion_tokens"]) == (10 * episode.turns, 3 * episode.turns)
    assert not judge_episode(task, episode, gold_hash(task)).checks["format"]  # the malformed calls stay on record


def test_agent_stops_at_the_turn_limit(task):
    identify = make_env(task.env).identify_tool
    episode, counts = episode_with(task, Replies([call(identify, json.dumps({"email": task.identity["email"]}))]), max_turns=5)
    assert episode.end_reason == "max_turns" and episode.turns == 5 and counts["turns"] == 5
    assert counts["final_answers"] == 0 and counts["tool_calls"] == 5 and counts["parse_failures"] == 0
    assert not judge_episode(task, episode, gold_hash(task)).passed


def test_a_refused_request_ends_the_episode(task):
    backend = Replies([{"role": "assistant", "content": "Could you please provide your email?"}, RequestError("prompt too long")])
    episode, counts = episode_with(task, backend)
    assert episode.end_reason == REQUEST_ERROR and episode.turns == 1 and counts["request_errors"] == 1
    assert episode.messages[-1]["role"] == "user"
    assert not judge_episode(task, episode, gold_hash(task)).checks["completed"]


def env_opening(task, persona):
    """The scripted user's first message on an environment task."""
    return ScriptedUser(task, persona, make_env(task.env).slot_descriptions).first_message()


class PlayerModel:
    """A deterministic 'model' that emits tool calls: for each conversation (keyed by its system prompt and first user
    message) it runs the careful scripted policy of the task the user asks about, with only the tools it is offered.

    It stands in for a capable LLM; the agent under test (`LLMAgent`) still sees no plan, only messages and tools, and
    the trajectories are judged from environment state and rubric as usual."""

    backend_id = "player"

    def __init__(self, openings, max_retries=0):
        """`openings`: (first user message, ("env" or "sim", task)) pairs."""
        self.by_opening = {}
        for opening, (kind, task) in openings:
            assert self.by_opening.setdefault(opening, (kind, task))[1].task_id == task.task_id, f"ambiguous opening {opening!r}"
        self.max_retries = max_retries
        self.players, self.requests, self.calls = {}, 0, 0

    @classmethod
    def for_plan(cls, plan, cfg):
        """A player for every environment job and simulated task of a synthesis plan."""
        openings = [(env_opening(j.task, j.persona), ("env", j.task)) for s in plan.shards for j in s.env_jobs]
        openings += [(RequestUser(t.instruction, t.persona).first_message(), ("sim", t)) for t in plan.sim_tasks]
        return cls(openings, cfg.simulation.max_retries)

    def _player(self, request):
        kind, task = self.by_opening[request.messages[1]["content"]]
        offered = [t["function"]["name"] for t in request.tools]
        if kind == "sim":
            return PlanAgent(task.plan, self.max_retries, 0.0, random.Random(0))
        env = make_env(task.env)
        env.reset(task.seed, db=task.initial_db)
        return ScriptedAgent(oracle_agent(env).model_copy(update={"tools": offered}), task, env, random.Random(0))

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests += 1
        key = (request.messages[0]["content"], request.messages[1]["content"])
        if len(request.messages) == 2:
            self.players[key] = self._player(request)
        message = self.players[key](request.messages)
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        self.calls += len(calls)
        return ChatResponse(message=assistant_message(message["content"], calls), usage=Usage(prompt_tokens=20, completion_tokens=5))


def agent_config(path):
    # terse and chatty users open with the full request, which tells the test model which task it is in
    base = config(path)
    return config(path, num_tasks=8, personas=["terse", "chatty"], agent_missing_tool_prob=0.0, roles=ROLES,
                  simulation={**base.simulation.model_dump(), "num_tasks": 12})


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return mcp_file(tmp_path_factory.mktemp("mcp"))


def test_agent_role_is_configured_by_name(path):
    cfg = agent_config(path)
    assert cfg.roles.agent == "agent-model"
    with pytest.raises(ValueError, match="agent-model"):
        generate_tool_data(cfg, seed=0, backends={})
    with pytest.raises(ValidationError, match="LLM judge"):
        config(path, roles={**ROLES, "judge_calibration": 4})


def assert_llm_agent_run(model, data):
    _, sft, stats = data
    agent = stats["llm_agent"]
    sim = stats["simulated"]
    assert set(agent) == set(AGENT_COUNTERS)
    assert agent["trajectories"] == stats["generated"] + sim["generated"] and stats["generated"] > 0 and sim["generated"] > 0
    assert agent["turns"] == model.requests and agent["tool_calls"] == model.calls > 0
    assert agent["parse_failures"] == agent["request_errors"] == 0
    assert agent["prompt_tokens"] == 20 * model.requests and agent["completion_tokens"] == 5 * model.requests
    # the careful player with every tool it needs passes every environment task, faults included (state judge)
    assert stats["kept"] == stats["generated"] and stats["pass_rate"]["db_match"] == 1.0
    assert 0 < sim["kept"] <= sim["generated"] and sim["tool_call_outcomes"]["transient"] > 0
    assert stats["kept_total"] == len(sft)
    for row in sft.itertuples():
        messages, tools = json.loads(row.messages), json.loads(row.tools)
        assert parse(render(messages, tools)) == (normalize_messages(messages), tools)
        calls = [c for m in messages for c in m.get("tool_calls") or []]
        assert calls and all(c["id"] == f"functions.{c['function']['name']}:0" for c in calls)  # K2 ids, one call a turn


def test_llm_agent_plays_environments_and_simulated_tools(path):
    cfg = agent_config(path)
    model = PlayerModel.for_plan(plan_tool_data(cfg, seed=0), cfg)
    data = generate_tool_data(cfg, seed=0, backends={"agent-model": model})
    assert_llm_agent_run(model, data)
    again = generate_tool_data(cfg.model_copy(update={"num_shards": 2}), seed=0,
                               backends={"agent-model": PlayerModel.for_plan(plan_tool_data(cfg, seed=0), cfg)})
    assert again[1].equals(data[1]) and again[2] == data[2]


def test_llm_agent_through_the_openai_backend_and_a_loopback_server(path, monkeypatch):
    cfg = agent_config(path)
    model = PlayerModel.for_plan(plan_tool_data(cfg, seed=0), cfg)
    with running_server(model, "player") as server:
        monkeypatch.setenv("K2_TEST_LLM_URL", server.url)
        remote = make_backend(OpenAILLMConfig(kind="openai", model="player", base_url_env="K2_TEST_LLM_URL", max_retries=0))
        data = generate_tool_data(cfg, seed=0, backends={"agent-model": remote})
    assert_llm_agent_run(model, data)
    direct = generate_tool_data(cfg, seed=0, backends={"agent-model": PlayerModel.for_plan(plan_tool_data(cfg, seed=0), cfg)})
    assert data[1].equals(direct[1]) and data[2] == direct[2]  # the wire changes nothing

