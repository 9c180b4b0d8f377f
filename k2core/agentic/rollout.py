"""Multi-turn rollouts: agent policy, simulated user and tool environment exchanging OpenAI-style messages.

The same loop serves data synthesis (scripted or LLM agents) and evaluation (a model as the agent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from k2core.agentic.env import CallRecord, ToolEnv
from k2core.agentic.users import ScriptedUser

Policy = Callable[[list[dict]], dict]


class EndEpisode(Exception):
    """Raised by a policy that cannot take another turn (e.g. its model refuses the request); the episode ends
    with `reason` as its end reason, so the judge rejects it as not completed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Episode:
    """A finished conversation plus the environment's ground-truth call log."""

    messages: list[dict]
    tools: list[dict]
    calls: list[CallRecord]
    end_reason: str
    turns: int
    final_hash: str


def run_episode(env: ToolEnv, policy: Policy, user: ScriptedUser, system_prompt: str, tool_names: list[str], max_turns: int) -> Episode:
    """Alternate agent and user (tools in between) until the user stops or `max_turns` agent turns pass.

    `env` must already be reset. Calls to tools outside `tool_names` are refused like unknown tools.
    The user's final stop message is not kept: the transcript ends with the agent. A policy raising `EndEpisode`
    ends the conversation where it is.
    """
    messages: list[dict] = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user.first_message()}]
    allowed = set(tool_names)
    end_reason, turns = "max_turns", 0
    while turns < max_turns:
        try:
            reply = policy(messages)
        except EndEpisode as stop:
            end_reason = stop.reason
            break
        turns += 1
        message = {"role": "assistant", "content": reply.get("content") or ""}
        calls = reply.get("tool_calls") or []
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
        if calls:
            for call in calls:
                fn = call.get("function", {})
                name = fn.get("name", "")
                if name in allowed:
                    result = env.step({"name": name, "arguments": fn.get("arguments", "{}")})
                else:
                    result = f"Error: tool {name!r} is not available; use one of {sorted(allowed)}"
                messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "name": name, "content": result})
            continue
        answer = user.reply(message["content"])
        if user.done:
            end_reason = "user_stop"
            break
        messages.append({"role": "user", "content": answer})
    return Episode(messages, env.tool_specs(tool_names), list(env.log), end_reason, turns, env.db_hash())
