"""τ²-bench airline and retail: data, the conversation protocol, our reward (oracle 1, do-nothing / near-miss /
partial / premature 0), pass^k by hand, the harness task end to end with scripted backends, and agreement with τ²'s
own evaluator (`tau2.evaluator.evaluator.evaluate_simulation`, imported here only) on recorded trajectories."""

from __future__ import annotations

import copy
import functools
import importlib
import itertools
import json
import random
import re
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from k2core.agentic.llm_agent import AgentRole
from k2core.errors import UserError
from k2core.eval.harness import TaskOptions, run_task
from k2core.eval.registry import TASKS
from k2core.eval.sample_cache import SampleCache
from k2core.eval.tau2_data import data_dir, load_tasks, parse_task, policy, render_scenario
from k2core.eval.tau2_env import Tau2Env
from k2core.eval.tau2_reward import gold_hash, pass_hat_k, score_conversation
from k2core.eval.tau2_rollout import run_conversation
from k2core.eval.tau2_task import agent_system_prompt, tau2_task, trial_seed
from k2core.eval.tau2_user import GREETING, STOP, LLMUser, user_system_prompt
from k2core.llm import ChatRequest, ChatResponse, RequestError, Usage
from k2core.llm.messages import assistant_message

DONE = "[done]"  # what a scripted agent says when it has finished; the scripted user then stops
PER_DOMAIN = {"airline": 3, "retail": 8}  # tasks per domain in the seeded subsets (airline's 7 MB DB is slow to load)


def reply(message: dict) -> ChatResponse:
    return ChatResponse(message=message, usage=Usage(prompt_tokens=1, completion_tokens=1))


class ScriptedUserBackend:
    """The simulated user as a backend: opens with the id of the task whose scenario its system prompt holds, stops
    once the agent says DONE (or never, with `stops=False`)."""

    backend_id = "scripted-user"

    def __init__(self, domain: str, stops: bool = True) -> None:
        self.ids = {user_system_prompt(t): t.id for t in load_tasks(domain)}
        self.stops = stops
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        heard = request.messages[-1]["content"]
        if self.stops and DONE in heard:
            return reply({"role": "assistant", "content": f"Thanks, that is all. {STOP}"})
        if len(request.messages) == 2:
            task_id = self.ids[request.messages[0]["content"]]
            return reply({"role": "assistant", "content": f"Hello, I am calling about task {task_id}."})
        return reply({"role": "assistant", "content": "Please go on."})


def plan_messages(calls: list[dict], final: str) -> list[dict]:
    """One assistant message per call, then the final text."""
    steps = [assistant_message("", [(c["name"], json.dumps(c["arguments"]))]) for c in calls]
    return steps + [{"role": "assistant", "content": final}]


class PlanBackend:
    """The agent as a backend: replays a plan of assistant messages, one per request (the last one repeats)."""

    backend_id = "plan-agent"

    def __init__(self, plan: list[dict]) -> None:
        self.plan, self.turn = plan, 0

    def complete(self, request: ChatRequest) -> ChatResponse:
        message = self.plan[min(self.turn, len(self.plan) - 1)]
        self.turn += 1
        return reply(message)


def gold_calls(task) -> list[dict]:
    return [{"name": a.name, "arguments": copy.deepcopy(a.arguments)} for a in task.actions or ()]


def oracle_final(task) -> str:
    return " ".join(["Your request is complete.", *task.communicate_info, DONE])


def converse(task, plan: list[dict], stops: bool = True, max_steps: int = 200, max_errors: int = 10):
    """Our conversation loop with LLMAgent over `plan` and the scripted user."""
    env = Tau2Env(task.domain)
    agent = AgentRole(PlanBackend(plan), 0.0, 64).policy(env.tool_specs(), seed=3)
    user = LLMUser(ScriptedUserBackend(task.domain, stops), task, 64, seed=3)
    return run_conversation(env, agent, user, agent_system_prompt(task.domain), max_steps, max_errors)


def seeded(domain: str, n: int, keep=lambda t: True) -> list:
    """The first `n` tasks satisfying `keep` in a seeded shuffle of the domain's tasks."""
    tasks = list(load_tasks(domain))
    random.Random(f"tau2-test:{domain}").shuffle(tasks)
    return list(itertools.islice((t for t in tasks if keep(t)), n))


@functools.cache
def pristine(domain: str) -> Tau2Env:
    """One untouched environment per domain, for its initial hash and tool types (never stepped)."""
    return Tau2Env(domain)


def initial_hash(domain: str) -> str:
    return pristine(domain).db_hash()


def changes_db(task) -> bool:
    return task.actions is not None and gold_hash(task) != initial_hash(task.domain)


def last_write_index(task) -> int | None:
    """The index of the task's last gold action whose tool writes the DB."""
    writes = [i for i, a in enumerate(task.actions or ()) if pristine(task.domain).writes(a.name)]
    return writes[-1] if writes else None


def near_miss_calls(task) -> list[dict]:
    """The gold calls with one argument of the last write action changed: a string gets one character more, a number
    one more, a list loses its last element."""
    calls = gold_calls(task)
    index = last_write_index(task)
    arguments = calls[index]["arguments"]
    name = next(k for k, v in arguments.items() if isinstance(v, (str, int, float, list)) and not isinstance(v, bool))
    value = arguments[name]
    arguments[name] = value + "x" if isinstance(value, str) else value[:-1] if isinstance(value, list) else value + 1
    return calls


# --- data ---------------------------------------------------------------------------------------------------------

def test_domains_load_from_the_package_data():
    assert (len(load_tasks("airline")), len(load_tasks("retail"))) == (50, 114)
    assert len(Tau2Env("airline").tool_specs()) == 14 and len(Tau2Env("retail").tool_specs()) == 15
    assert "airline" in policy("airline").lower() and "retail" in policy("retail").lower()
    assert all(t.reward_basis == ("DB", "COMMUNICATE") for d in ("airline", "retail") for t in load_tasks(d))
    assert {"tau2_airline", "tau2_retail"} <= set(TASKS)


def test_scenarios_render_as_tau2_prints_them():
    tau2_tasks = importlib.import_module("tau2.data_model.tasks")
    for domain in ("airline", "retail"):
        raw = json.loads((data_dir() / "domains" / domain / "tasks.json").read_text())
        for entry, ours in zip(raw, load_tasks(domain), strict=True):
            assert ours.scenario == str(tau2_tasks.UserScenario.model_validate(entry["user_scenario"]))
            assert render_scenario(entry["user_scenario"]) == ours.scenario


def test_tasks_the_reward_cannot_be_computed_for_are_refused():
    base = {"id": "7", "user_scenario": {"instructions": "call"}, "evaluation_criteria": {"actions": []}}
    assert parse_task("retail", base, "f.json").actions == ()
    with pytest.raises(UserError, match=r"f.json: task '7': reward_basis \['NL_ASSERTION'\]"):
        parse_task("retail", {**base, "evaluation_criteria": {"reward_basis": ["DB", "NL_ASSERTION"]}}, "f.json")
    with pytest.raises(UserError, match="initial_state"):
        parse_task("retail", {**base, "initial_state": {"initialization_actions": [{"x": 1}]}}, "f.json")
    assert parse_task("retail", {**base, "evaluation_criteria": None}, "f.json").evaluated is False
    assert parse_task("retail", {**base, "evaluation_criteria": {"actions": None}}, "f.json").actions is None


# --- pass^k ----------------------------------------------------------------------------------------------------

def test_pass_hat_k_by_hand():
    # three tasks, three trials each: 2, 0 and 3 successes
    values = np.array([1, 0, 1, 0, 0, 0, 1, 1, 1], dtype=float)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert pass_hat_k(values, groups, 1) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert pass_hat_k(values, groups, 2) == pytest.approx((1 / 3 + 0 + 1) / 3)  # C(2,2)/C(3,2) = 1/3
    assert pass_hat_k(values, groups, 3) == pytest.approx((0 + 0 + 1) / 3)
    # four trials, 3 successes: pass^2 = C(3,2)/C(4,2) = 1/2; a task with fewer than k trials does not count
    assert pass_hat_k(np.array([1, 1, 1, 0, 1.0]), np.array([0, 0, 0, 0, 1]), 2) == pytest.approx(0.5)
    assert np.isnan(pass_hat_k(np.array([1.0]), np.array([0]), 2))


# --- the conversation protocol -------------------------------------------------------------------------------------

def test_user_simulator_prompt_roles_and_stop_tokens():
    task = load_tasks("retail")[0]
    backend = ScriptedUserBackend("retail")
    user = LLMUser(backend, task, 32, seed=5)
    assert user.first_message() == "Hello, I am calling about task 0."
    system = backend.requests[0].messages[0]["content"]
    assert system.startswith("# User Simulation Guidelines") and f"<scenario>\n{task.scenario}\n</scenario>" in system
    assert backend.requests[0].messages[1] == {"role": "user", "content": GREETING}
    assert not user.done
    user.reply(f"Your exchange is placed. {DONE}")
    assert user.done
    assert [m["role"] for m in backend.requests[-1].messages] == ["system", "user", "assistant", "user"]
    for token in ("###TRANSFER###", "###OUT-OF-SCOPE###"):
        user = LLMUser(PlanBackend([{"role": "assistant", "content": f"ok {token}"}]), task, 32, seed=0)
        user.reply("hi")
        assert user.done


def test_conversation_follows_tau2_turns_and_limits():
    task = seeded("retail", 1, changes_db)[0]
    episode = converse(task, plan_messages(gold_calls(task), oracle_final(task)))
    assert episode.end_reason == "user_stop"
    assert [m["role"] for m in episode.messages[:3]] == ["system", "assistant", "user"]
    assert episode.messages[1]["content"] == GREETING
    assert episode.messages[-1]["role"] == "user" and STOP in episode.messages[-1]["content"]
    assert [c.name for c in episode.calls] == [a.name for a in task.actions]  # some gold calls fail, as in τ²
    # a user who never stops: steps run out (each message one step, one agent message's tool results one step)
    never = converse(task, [{"role": "assistant", "content": "Anything else?"}], stops=False, max_steps=7)
    assert never.end_reason == "max_steps" and len(never.messages) == 2 + 7  # system prompt and greeting first
    # ten failing calls end it as too_many_errors
    broken = converse(task, [assistant_message("", [("no_such_tool", "{}")])])
    assert broken.end_reason == "too_many_errors" and len(broken.calls) == 10
    assert all(c.result.startswith("Error: ") for c in broken.calls)
    # an empty agent message, or a refused request, is an agent error
    assert converse(task, [{"role": "assistant", "content": "  "}]).end_reason == "agent_error"

    class Refuses:
        backend_id = "refuses"

        def complete(self, request):
            raise RequestError("too long")

    env = Tau2Env("retail")
    agent = AgentRole(Refuses(), 0.0, 8).policy(env.tool_specs(), 0)
    refused = run_conversation(env, agent, LLMUser(ScriptedUserBackend("retail"), task, 8, 0), "policy")
    assert refused.end_reason == "agent_error"
    assert score_conversation(task, refused.messages, refused.end_reason).reward == 0.0


def test_bad_arguments_are_tool_errors_not_crashes():
    env = Tau2Env("retail")
    assert env.step({"name": "get_order_details", "arguments": "{oops"}).startswith("Error: the arguments are not JSON")
    assert env.step({"name": "get_order_details", "arguments": "[1]"}) == "Error: the arguments must be a JSON object"
    assert env.step({"name": "get_order_details", "arguments": {"order_id": "#nope"}}).startswith("Error: ")
    assert env.errors == 3 and env.db_hash() == initial_hash("retail")
    assert env.writes("cancel_pending_order") and not env.writes("get_order_details") and not env.writes("nope")
    assert [c.applied for c in env.log] == [False] * 3


# --- rewards ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trajectories() -> list[tuple[str, object, object, object]]:
    """(kind, task, episode, our reward) over seeded subsets of both domains: oracle, near-miss, do-nothing, partial,
    silent (the oracle's actions without its communicate_info) and premature (the oracle's, but the user never
    stops)."""
    out = []
    for domain, n in PER_DOMAIN.items():
        for task in seeded(domain, n, lambda t: t.actions is not None):
            calls = gold_calls(task)
            out.append(("oracle", task, converse(task, plan_messages(calls, oracle_final(task)))))
            out.append(("do-nothing", task, converse(task, plan_messages([], f"I cannot help with that. {DONE}"))))
            if last_write_index(task) is not None:
                near_miss = plan_messages(near_miss_calls(task), oracle_final(task))
                out.append(("near-miss", task, converse(task, near_miss)))
                partial = calls[:last_write_index(task)]
                out.append(("partial", task, converse(task, plan_messages(partial, oracle_final(task)))))
            if task.communicate_info:
                out.append(("silent", task, converse(task, plan_messages(calls, f"Done. {DONE}"))))
        premature_task = seeded(domain, 1, changes_db)[0]
        plan = plan_messages(gold_calls(premature_task), oracle_final(premature_task))
        out.append(("premature", premature_task, converse(premature_task, plan, stops=False, max_steps=60)))
    return [(kind, task, episode, score_conversation(task, episode.messages, episode.end_reason))
            for kind, task, episode in out]


def test_oracle_scores_1_and_do_nothing_0_where_the_gold_changes_the_db(trajectories):
    oracle = [(t, v) for kind, t, _, v in trajectories if kind == "oracle"]
    assert {t.domain for t, _ in oracle} == {"airline", "retail"} and len(oracle) == sum(PER_DOMAIN.values())
    for task, verdict in oracle:
        assert (verdict.reward, verdict.db, verdict.communicate) == (1.0, 1.0, 1.0), (task.domain, task.id, verdict)
        assert verdict.success
    nothing = [(t, v) for kind, t, _, v in trajectories if kind == "do-nothing"]
    assert any(changes_db(t) for t, _ in nothing)
    for task, verdict in nothing:
        expected = 0.0 if changes_db(task) or task.communicate_info else 1.0  # an unchanged DB is right for some
        assert verdict.reward == expected, (task.domain, task.id, verdict)


def test_near_miss_partial_silent_and_premature_score_0(trajectories):
    kinds = {kind for kind, _, _, _ in trajectories}
    assert {"near-miss", "partial", "silent", "premature"} <= kinds
    for kind, task, episode, verdict in trajectories:
        if kind in ("oracle", "do-nothing"):
            continue
        assert verdict.reward == 0.0 and not verdict.success, (kind, task.domain, task.id, verdict)
        if kind == "silent":
            assert (verdict.db, verdict.communicate) == (1.0, 0.0)
        if kind == "near-miss":
            assert (verdict.db, verdict.communicate) == (0.0, 1.0)
        if kind == "premature":
            assert episode.end_reason == "max_steps" and episode.final_hash == gold_hash(task)


def test_a_successful_wrong_write_is_a_near_miss():
    """Near-misses whose wrong call succeeds (so only the DB comparison can catch them): a cancellation with the
    other allowed reason, an address with another street line."""
    def first(name):
        return next(t for t in load_tasks("retail") if t.actions and t.actions[-1].name == name)

    other_reason = {"no longer needed": "ordered by mistake", "ordered by mistake": "no longer needed"}
    for name, argument in (("cancel_pending_order", "reason"), ("modify_user_address", "address1")):
        task = first(name)
        calls = gold_calls(task)
        old = calls[-1]["arguments"][argument]
        calls[-1]["arguments"][argument] = other_reason[old] if argument == "reason" else "1 Elm St"
        episode = converse(task, plan_messages(calls, oracle_final(task)))
        assert episode.calls[-1].outcome == "ok" and episode.calls[-1].applied
        assert score_conversation(task, episode.messages, episode.end_reason).reward == 0.0


def test_communicate_info_matches_case_and_commas_as_tau2():
    task = next(t for t in load_tasks("retail") if any(re.fullmatch(r"\d{4,}\.\d+", i) for i in t.communicate_info))
    info = next(i for i in task.communicate_info if re.fullmatch(r"\d{4,}\.\d+", i))
    whole, cents = info.split(".")
    others = " ".join(i.upper() for i in task.communicate_info if i != info)
    said = [{"role": "assistant", "content": f"Your refund is ${int(whole):,}.{cents}. {others}"}]
    assert "," in said[0]["content"] and score_conversation(task, said, "user_stop").communicate == 1.0
    half = [{"role": "assistant", "content": f"Your refund is {others}"}]
    assert score_conversation(task, half, "user_stop").communicate == 0.0
    user_says_it = [{"role": "user", "content": " ".join(task.communicate_info)}]
    assert score_conversation(task, user_says_it, "user_stop").communicate == 0.0  # only the agent's words count


# --- the harness task -----------------------------------------------------------------------------------------

class OracleAgentBackend:
    """The agent as a backend for whole tasks: reads the task id from the user's opening line and plays its gold."""

    backend_id = "oracle-agent"

    def __init__(self, domain: str) -> None:
        self.tasks = {t.id: t for t in load_tasks(domain)}

    def complete(self, request: ChatRequest) -> ChatResponse:
        opening = next(m["content"] for m in request.messages if m["role"] == "user")
        task = self.tasks[re.search(r"task (\S+?)\.", opening).group(1)]
        plan = plan_messages(gold_calls(task), oracle_final(task))
        done = sum(1 for m in request.messages if m["role"] == "assistant" and m.get("tool_calls"))
        return reply(plan[min(done, len(plan) - 1)])


def test_harness_task_pass_hat_k_with_cache(tmp_path):
    user = ScriptedUserBackend("retail")
    options = TaskOptions(limit=3, seed=1, max_tokens=64, trials=2, user_backend=user)
    task = tau2_task("retail", options)
    assert [s.metadata["trial"] for s in task.samples] == [0, 1] * 3
    assert task.samples[0].input[0]["content"] == agent_system_prompt("retail")
    cache = SampleCache(tmp_path / "cache")
    result = run_task(task, OracleAgentBackend("retail"), tmp_path, cache, progress=False, resamples=50)
    assert {k: v.value for k, v in result.metrics.items()} == {"pass_hat_1": 1.0, "pass_hat_2": 1.0}
    lines = [json.loads(line) for line in (tmp_path / "tau2_retail.samples.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(line["score"] == 1.0 and line["answer"] == "1" for line in lines)
    assert json.loads(lines[0]["response"])["end_reason"] == "user_stop"
    again = run_task(tau2_task("retail", options), OracleAgentBackend("retail"), None, cache, progress=False,
                     resamples=50)
    assert again.generated == 0 and again.metrics["pass_hat_2"].value == 1.0
    # the second trial of every task fails: pass^1 is 1/2, pass^2 is 0

    class FailsSecondTrial(OracleAgentBackend):
        backend_id = "oracle-agent-fails-trial-1"

        def complete(self, request):
            opening = next(m["content"] for m in request.messages if m["role"] == "user")
            task_id = re.search(r"task (\S+?)\.", opening).group(1)
            turn = sum(m["role"] == "assistant" for m in request.messages) - 1  # LLMAgent seeds turn t with seed + t
            if request.seed - turn == trial_seed(options.seed, task_id, 1):
                return reply({"role": "assistant", "content": f"No. {DONE}"})
            return super().complete(request)

    scores = run_task(tau2_task("retail", options), FailsSecondTrial("retail"), None, None, progress=False,
                      resamples=50)
    assert {k: v.value for k, v in scores.metrics.items()} == {"pass_hat_1": 0.5, "pass_hat_2": 0.0}


def test_user_defaults_to_the_agents_backend():
    task = tau2_task("airline", TaskOptions(limit=1))
    assert task.solver.settings["user"] == "agent" and task.solver.user_backend is None
    assert tau2_task("airline", TaskOptions(limit=1, user_backend=ScriptedUserBackend("airline"))).solver.settings[
        "user"] == "scripted-user"
    with pytest.raises(UserError, match="at least 1 trial"):
        tau2_task("airline", TaskOptions(trials=0))


# --- agreement with τ²'s evaluator -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tau2_evaluate():
    """τ²'s `evaluate_simulation`. Its module imports the NL-assertion judge (litellm) and the registry (every agent,
    user and domain, litellm again), neither installed nor used for these tasks' reward basis; both are stood in for
    while it is imported, the registry by one that gives each domain's own environment constructor."""
    nl = types.ModuleType("tau2.evaluator.evaluator_nl_assertions")

    class NLAssertionsEvaluator:
        @classmethod
        def calculate_reward(cls, **_):
            raise AssertionError("NL assertions are not in these tasks' reward basis")

    nl.NLAssertionsEvaluator = NLAssertionsEvaluator
    registry = types.ModuleType("tau2.registry")
    registry.registry = SimpleNamespace(get_env_constructor=lambda domain: importlib.import_module(
        f"tau2.domains.{domain}.environment").get_environment)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "tau2.evaluator.evaluator_nl_assertions", nl)
        patch.setitem(sys.modules, "tau2.registry", registry)
        patch.delitem(sys.modules, "tau2.evaluator.evaluator", raising=False)
        evaluator = importlib.import_module("tau2.evaluator.evaluator")
        yield evaluator
    sys.modules.pop("tau2.evaluator.evaluator", None)


def as_tau2(messages: list[dict]) -> list:
    """Our OpenAI-style messages (system prompt excluded) as τ² message objects."""
    m = importlib.import_module("tau2.data_model.message")
    out = []
    for message in messages:
        if message["role"] == "assistant":
            functions = [(c["id"], c["function"]) for c in message.get("tool_calls") or []]
            calls = [m.ToolCall(id=i, name=fn["name"], arguments=json.loads(fn["arguments"])) for i, fn in functions]
            out.append(m.AssistantMessage(role="assistant", content=message["content"] or None,
                                          tool_calls=calls or None))
        elif message["role"] == "tool":
            out.append(m.ToolMessage(id=message["tool_call_id"], role="tool", content=message["content"],
                                     requestor="assistant", error=message["content"].startswith("Error: ")))
        elif message["role"] == "user":
            out.append(m.UserMessage(role="user", content=message["content"]))
    return out


def test_our_reward_agrees_with_tau2s_evaluator(trajectories, tau2_evaluate):
    simulation = importlib.import_module("tau2.data_model.simulation")
    tau2_tasks = {d: {t.id: t for t in importlib.import_module(f"tau2.domains.{d}.environment").get_tasks(None)}
                  for d in PER_DOMAIN}
    compared = []
    for kind, task, episode, verdict in trajectories:
        run = simulation.SimulationRun(id="x", task_id=task.id, start_time="0", end_time="0", duration=0.0,
                                       termination_reason=episode.end_reason, messages=as_tau2(episode.messages[1:]))
        theirs = tau2_evaluate.evaluate_simulation(run, tau2_tasks[task.domain][task.id],
                                                  tau2_evaluate.EvaluationType.ALL, solo_mode=False,
                                                  domain=task.domain).reward
        compared.append((kind, task.domain, task.id, verdict.reward, theirs))
    disagree = [c for c in compared if c[3] != c[4]]
    assert not disagree, disagree
    assert len(compared) >= 40 and {c[3] for c in compared} == {0.0, 1.0}
    print(f"\nτ² agreement: {len(compared)}/{len(compared)} trajectories, rewards "
          f"{sum(c[3] for c in compared):.0f} x 1 and {sum(c[3] == 0 for c in compared)} x 0")
