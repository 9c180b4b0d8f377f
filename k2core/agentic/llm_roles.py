"""LLM-backed roles of the agentic pipeline behind `k2core.llm.ChatBackend`: strict-JSON asking with validation and
retry, a persona user simulator, and a rubric judge with majority voting.

Every role is optional: the offline profile uses the rule-based user, simulator and judge, and a role switches to
a model only when `params.yaml` names a backend for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema

from k2core.llm import ChatBackend, ChatRequest

STOP = "###STOP###"
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_json(text: str) -> Any:
    """The JSON value in a reply, tolerating a Markdown code fence around it."""
    return json.loads(FENCE.sub("", text.strip()))


class JsonAsker:
    """Asks a backend for a JSON object that must satisfy a schema (and an optional extra check); on a bad answer
    the error goes back to the model and it tries again, up to `retries` more times. Counts what happened."""

    def __init__(self, backend: ChatBackend, retries: int, temperature: float, max_tokens: int, seed: int) -> None:
        self.backend, self.retries, self.temperature, self.max_tokens, self.seed = backend, retries, temperature, max_tokens, seed
        self.calls = self.failures = self.prompt_tokens = self.completion_tokens = 0

    def ask(self, messages: list[dict[str, Any]], schema: dict[str, Any],
            check: Callable[[Any], str | None] | None = None, seed: int | None = None) -> Any | None:
        """The validated object, or None after `retries + 1` failed attempts."""
        convo = list(messages)
        for attempt in range(self.retries + 1):
            request = ChatRequest(messages=convo, temperature=self.temperature, max_tokens=self.max_tokens,
                                  seed=(self.seed if seed is None else seed) + attempt)
            response = self.backend.complete(request)
            self.calls += 1
            self.prompt_tokens += response.usage.prompt_tokens
            self.completion_tokens += response.usage.completion_tokens
            text = response.message.get("content") or ""
            try:
                obj = parse_json(text)
                jsonschema.validate(obj, schema)
                problem = check(obj) if check else None
            except json.JSONDecodeError as exc:
                problem = f"the reply is not valid JSON ({exc.msg}); answer with JSON only"
            except jsonschema.ValidationError as exc:
                problem = f"the JSON does not match the required format: {exc.message}"
            if problem is None:
                return obj
            convo = [*convo, {"role": "assistant", "content": text}, {"role": "user", "content": f"Invalid answer: {problem}. Try again."}]
        self.failures += 1
        return None


class LLMUser:
    """A persona-driven simulated user (same interface as the scripted users: first_message, reply, done)."""

    def __init__(self, backend: ChatBackend, instruction: str, persona: str, seed: int, temperature: float, max_tokens: int) -> None:
        self.backend, self.seed, self.temperature, self.max_tokens = backend, seed, temperature, max_tokens
        self.system = (
            f"You play a user talking to an assistant. Persona: {persona}. Your task: {instruction} "
            "Stay in character, give only the details the assistant needs when it asks, never invent facts that are not "
            f"in your task, and when your task is done (or cannot be done) reply with {STOP} alone."
        )
        self.history: list[dict[str, str]] = []
        self.done = False
        self.turns = 0

    def _speak(self) -> str:
        request = ChatRequest(messages=[{"role": "system", "content": self.system}, *self.history],
                              temperature=self.temperature, seed=self.seed + self.turns, max_tokens=self.max_tokens)
        self.turns += 1
        text = (self.backend.complete(request).message.get("content") or "").strip()
        if STOP in text:
            self.done = True
        self.history.append({"role": "assistant", "content": text})
        return text

    def first_message(self) -> str:
        self.history.append({"role": "user", "content": "(The assistant is ready. Send your first message.)"})
        return self._speak()

    def reply(self, agent_text: str) -> str:
        # roles are mirrored: the agent's words are the "user" turns of the simulator's own conversation
        self.history.append({"role": "user", "content": agent_text})
        return self._speak()


VERDICT_SCHEMA = {
    "type": "object", "required": ["passed", "score", "reasons"],
    "properties": {"passed": {"type": "boolean"}, "score": {"type": "number", "minimum": 0, "maximum": 1},
                   "reasons": {"type": "array", "items": {"type": "string"}}},
}


def transcript(messages: list[dict[str, Any]]) -> str:
    """A plain-text view of a trajectory for the judge prompt (tool calls and results included)."""
    lines = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                lines.append(f"ASSISTANT CALLS {c['function']['name']}({c['function']['arguments']})")
            if m.get("content"):
                lines.append(f"ASSISTANT: {m['content']}")
        elif m["role"] == "tool":
            lines.append(f"TOOL {m.get('name', '')} -> {m['content']}")
        else:
            lines.append(f"{m['role'].upper()}: {m['content']}")
    return "\n".join(lines)


class LLMJudge:
    """Scores a trajectory against its rubric: `votes` structured verdicts with different seeds, majority decides."""

    def __init__(self, asker: JsonAsker, votes: int) -> None:
        if votes < 1 or votes % 2 == 0:
            raise ValueError(f"judge votes must be a positive odd number, got {votes}")
        self.asker, self.votes = asker, votes

    def judge(self, rubric: dict[str, Any], messages: list[dict[str, Any]], seed: int) -> tuple[bool, list[dict[str, Any]]]:
        """(majority passed, the individual verdicts); an unparseable vote counts as a fail."""
        prompt = (
            "You grade an assistant's tool-use conversation against a rubric. Rubric (JSON):\n"
            f"{json.dumps(rubric, ensure_ascii=False)}\n\nConversation:\n{transcript(messages)}\n\n"
            "Check each success criterion and checkpoint. Answer with JSON only: "
            '{"passed": true|false, "score": 0..1, "reasons": ["..."]}.'
        )
        verdicts = [self.asker.ask([{"role": "user", "content": prompt}], VERDICT_SCHEMA, seed=seed + 1000 * v) for v in range(self.votes)]
        yes = sum(1 for v in verdicts if v and v["passed"])
        return yes * 2 > self.votes, [v or {"passed": False, "score": 0.0, "reasons": ["no valid verdict"]} for v in verdicts]
