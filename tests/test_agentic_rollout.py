"""Scripted users and agents, multi-turn rollouts and the judge."""

import json
import random

import pytest

from k2core.agentic.agents import ScriptedAgent, oracle_agent, sample_agent
from k2core.agentic.domains import make_env
from k2core.agentic.faults import FaultInjector
from k2core.agentic.judge import format_ok, gold_hash, judge_episode
from k2core.agentic.rollout import run_episode
from k2core.agentic.tasks import generate_tasks
from k2core.agentic.users import STOP, ScriptedUser, mentioned
from k2core.chat import normalize_messages, render

PERSONAS = ["terse", "chatty", "guarded"]


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(["retail", "library"], 16, 1, 3, PERSONAS, 0.0, seed=4)


def rollout(task, profile_fn, persona, p_transient=0.0, p_edge=0.0, seed=0, max_turns=40):
    env = make_env(task.env)
    env.reset(task.seed, db=task.initial_db, faults=FaultInjector(p_transient, p_edge, seed))
    profile = profile_fn(env)
    agent = ScriptedAgent(profile, task, env, random.Random(seed))
    episode = run_episode(env, agent, ScriptedUser(task, persona, env.slot_descriptions), profile.system_prompt, profile.tools, max_turns)
    return episode, judge_episode(task, episode, gold_hash(task))


@pytest.mark.parametrize("persona", PERSONAS)
def test_oracle_passes_every_task_despite_faults(tasks, persona):
    for i, task in enumerate(tasks):
        episode, verdict = rollout(task, oracle_agent, persona, p_transient=0.15, p_edge=0.1, seed=i)
        assert verdict.passed, (task.instruction, verdict.checks)
        assert episode.end_reason == "user_stop" and episode.messages[-1]["role"] == "assistant"
        assert normalize_messages(episode.messages) == episode.messages
        assert render(episode.messages, episode.tools)


def test_messages_are_openai_style(tasks):
    episode, _ = rollout(tasks[0], oracle_agent, "guarded", p_transient=0.3, seed=1)
    calls = {c["id"]: c for m in episode.messages for c in m.get("tool_calls", [])}
    tool_msgs = [m for m in episode.messages if m["role"] == "tool"]
    assert calls and len(tool_msgs) == len(calls)
    for m in tool_msgs:
        assert calls[m["tool_call_id"]]["function"]["name"] == m["name"]
    for c in calls.values():
        assert c["type"] == "function" and isinstance(json.loads(c["function"]["arguments"]), dict)
    assert any(m["content"].startswith("Could you please provide your email") for m in episode.messages if m["role"] == "assistant")
    assert any("temporarily unavailable" in m["content"] for m in tool_msgs)


def test_personas_differ(tasks):
    task = tasks[0]
    firsts = {p: ScriptedUser(task, p, make_env(task.env).slot_descriptions).first_message() for p in PERSONAS}
    assert len(set(firsts.values())) == 3
    assert task.identity["email"] in firsts["terse"] and task.identity["email"] in firsts["chatty"]
    assert task.identity["email"] not in firsts["guarded"]
    assert len(firsts["chatty"]) > len(firsts["terse"])


def test_user_answers_slots_confirms_and_stops(tasks):
    task = next(t for t in tasks if len(t.goals) == 1)
    user = ScriptedUser(task, "guarded", make_env(task.env).slot_descriptions)
    user.first_message()
    assert task.identity["email"] in user.reply("Could you please provide your email address?")
    assert user.reply("I will do that. Shall I proceed (yes/no)?") == "Yes, go ahead."
    assert user.reply("Done.").endswith(STOP) and user.done


def test_mentioned_needs_whole_words():
    assert mentioned("3", ["set it to 3."]) and not mentioned("3", ["order O3412"])
    assert mentioned("a@b.com", ["mail: A@B.com."])


def test_rollouts_are_deterministic(tasks):
    a, _ = rollout(tasks[1], lambda env: sample_agent(env, random.Random(3), 0.3, 0.3, 0.3), "chatty", 0.2, 0.1, seed=9)
    b, _ = rollout(tasks[1], lambda env: sample_agent(env, random.Random(3), 0.3, 0.3, 0.3), "chatty", 0.2, 0.1, seed=9)
    assert a.messages == b.messages and a.final_hash == b.final_hash


def _with(**changes):
    return lambda env: oracle_agent(env).model_copy(update=changes)


def test_judge_rejects_wrong_arguments(tasks):
    writes = [t for t in tasks if t.checkpoints]
    verdicts = [rollout(t, _with(p_wrong_arg=1.0), "terse")[1] for t in writes]
    assert all(not v.passed for v in verdicts)
    assert any(not v.checks["db_match"] for v in verdicts)


def test_judge_rejects_missing_tool_and_extra_writes(tasks):
    task = next(t for t in tasks if t.checkpoints)
    missing = task.checkpoints[0]["name"]
    env = make_env(task.env)
    _, verdict = rollout(task, _with(tools=[n for n in env.tools if n != missing]), "terse")
    assert not verdict.checks["db_match"]
    _, extra = rollout(task, _with(p_extra_write=1.0), "terse")
    assert not extra.passed and not extra.checks["rubric"]


def test_judge_rejects_giving_up_on_transient_errors(tasks):
    task = tasks[0]
    _, verdict = rollout(task, _with(max_retries=0), "terse", p_transient=1.0)
    assert not verdict.passed and verdict.first_failure in {"db_match", "outputs", "rubric"}


def test_blind_retry_after_ambiguous_timeout_fails_rubric(tasks):
    task = next(t for t in tasks if any(c["name"] in {"cancel_pending_order", "checkout_book", "place_hold"} for c in t.checkpoints))
    _, careful = rollout(task, oracle_agent, "terse", p_edge=1.0)
    _, blind = rollout(task, _with(verify_ambiguous=False), "terse", p_edge=1.0)
    assert careful.passed and not blind.passed


def test_format_check(tasks):
    episode, _ = rollout(tasks[0], oracle_agent, "terse")
    assert format_ok(episode)
    call_msg = next(m for m in episode.messages if m.get("tool_calls"))
    call_msg["tool_calls"][0]["function"]["arguments"] = '{"bogus": 1}'
    assert not format_ok(episode)
