"""The agent role played by a model (K2 §3.1.1, Fig. 8b "Agent"): a `rollout.Policy` that asks a `ChatBackend` for
each assistant turn, offering the agent profile's tool subset as JSON schemas.

Data synthesis uses it for the agent role, and the tool-use evaluation (`k2core.eval.tool_env`) for whatever model is
evaluated, so a checkpoint and an external model behind any backend play the same tasks through the same policy.

The rollout does the rest: the profile's system prompt is the first message, every tool result comes back as a tool
message (errors included: an unknown tool, arguments that are not JSON or do not fit the schema, a failing tool),
and the episode ends when the user stops or after the turn limit. The agent sees no gold plan, only the conversation
and its tools, so its trajectories are judged from environment state and rubric alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from typing import Any

from k2core.agentic.rollout import EndEpisode
from k2core.llm import ChatBackend, ChatRequest, RequestError

AGENT_COUNTERS = ("trajectories", "turns", "final_answers", "tool_calls", "parse_failures", "request_errors",
                  "prompt_tokens", "completion_tokens")
REQUEST_ERROR = "agent_request_error"


def parse_failure(call: dict[str, Any], names: Collection[str]) -> bool:
    """Whether a call names no tool of `names` or has arguments that are not a JSON object: it cannot be executed
    at all (schema checks come after), so synthesis and evaluation both count it as malformed."""
    fn = call.get("function") or {}
    try:
        arguments = json.loads(fn.get("arguments", ""))
    except (TypeError, json.JSONDecodeError):
        return True
    return fn.get("name") not in names or not isinstance(arguments, dict)


class AgentRole:
    """The agent role of one shard: backend, sampling settings and counters summed over its trajectories
    (`parse_failures`: calls naming no offered tool or whose arguments are not a JSON object; `request_errors`:
    turns the backend refused, e.g. a conversation longer than its context, each ending its episode)."""

    def __init__(self, backend: ChatBackend, temperature: float, max_tokens: int) -> None:
        self.backend, self.temperature, self.max_tokens = backend, temperature, max_tokens
        self.counts: Counter[str] = Counter(dict.fromkeys(AGENT_COUNTERS, 0))

    def policy(self, tools: list[dict[str, Any]], seed: int) -> LLMAgent:
        """A fresh agent for one trajectory with `tools` (OpenAI function specs); turn t samples with seed + t."""
        self.counts["trajectories"] += 1
        return LLMAgent(self, tools, seed)


class LLMAgent:
    """One trajectory's agent: `messages -> assistant message` through the role's backend."""

    def __init__(self, role: AgentRole, tools: list[dict[str, Any]], seed: int) -> None:
        self.role, self.tools, self.seed = role, tools, seed
        self.names = {t["function"]["name"] for t in tools}
        self.turns = 0

    def __call__(self, messages: list[dict]) -> dict:
        role = self.role
        request = ChatRequest(messages=list(messages), tools=self.tools, temperature=role.temperature,
                              seed=self.seed + self.turns, max_tokens=role.max_tokens)
        self.turns += 1
        try:
            response = role.backend.complete(request)
        except RequestError as error:
            role.counts["request_errors"] += 1
            raise EndEpisode(REQUEST_ERROR) from error
        calls = response.message.get("tool_calls") or []
        role.counts.update(turns=1, final_answers=int(not calls), tool_calls=len(calls),
                           parse_failures=sum(parse_failure(c, self.names) for c in calls),
                           prompt_tokens=response.usage.prompt_tokens, completion_tokens=response.usage.completion_tokens)
        message: dict[str, Any] = {"role": "assistant", "content": response.message.get("content") or ""}
        if calls:
            message["tool_calls"] = calls
        return message
