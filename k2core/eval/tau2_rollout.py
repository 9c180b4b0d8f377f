"""One τ² conversation: an agent policy (`llm_agent.LLMAgent` for a model), the simulated user and a τ² domain.

It follows τ²'s orchestrator (`orchestrator/orchestrator.py`) rather than `rollout.run_episode`, because τ²'s
protocol is part of its score: the agent opens with τ²'s greeting and the user speaks first; each message is one
step (the tool results of one agent message together count as one); after every step that does not hand a tool
call to the environment, reaching `max_steps` (τ²'s default run: 200) ends the conversation as "max_steps" and
reaching `max_errors` failed tool calls (10) as "too_many_errors", even on the user's final message; a user
stop token ends it as "user_stop". An empty agent message (no text, no call) or a refused agent request ends it as
"agent_error", a refused or empty user reply as "user_error". The result is a `rollout.Episode`, as synthesis
rollouts return.
"""

from __future__ import annotations

from typing import Any

from k2core.agentic.llm_agent import REQUEST_ERROR
from k2core.agentic.rollout import EndEpisode, Episode, Policy
from k2core.eval.tau2_env import Tau2Env
from k2core.eval.tau2_reward import AGENT_ERROR, MAX_STEPS, TOO_MANY_ERRORS, USER_STOP
from k2core.eval.tau2_user import GREETING, LLMUser

MAX_STEPS_DEFAULT = 200
MAX_ERRORS_DEFAULT = 10


def run_conversation(env: Tau2Env, agent: Policy, user: LLMUser, system_prompt: str,
                     max_steps: int = MAX_STEPS_DEFAULT, max_errors: int = MAX_ERRORS_DEFAULT) -> Episode:
    """Play one conversation on a fresh `env`; the messages start with the system prompt and τ²'s greeting."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt},
                                      {"role": "assistant", "content": GREETING}]
    to, agent_text, calls = "user", GREETING, []
    steps = turns = 0
    end: str | None = None
    while end is None:
        try:
            if to == "user":
                text = user.reply(agent_text)
                messages.append({"role": "user", "content": text})
                end, to = (USER_STOP if user.done else None), "agent"
            elif to == "agent":
                reply = agent(messages)
                turns += 1
                content, calls = reply.get("content") or "", reply.get("tool_calls") or []
                if not calls and not content.strip():
                    end = AGENT_ERROR
                    break
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if calls:
                    message["tool_calls"] = calls
                messages.append(message)
                to, agent_text = ("env", agent_text) if calls else ("user", content)
            else:
                for call in calls:
                    fn = call.get("function") or {}
                    result = env.step({"name": fn.get("name", ""), "arguments": fn.get("arguments", "{}")})
                    messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "name": fn.get("name", ""),
                                     "content": result})
                to = "agent"
        except EndEpisode as stop:
            end = AGENT_ERROR if stop.reason == REQUEST_ERROR else stop.reason
            break
        steps += 1
        if to == "env":
            continue
        if steps >= max_steps:
            end = MAX_STEPS
        if env.errors >= max_errors:
            end = TOO_MANY_ERRORS
    return Episode(messages, env.tool_specs(), list(env.log), end, turns, env.db_hash())
