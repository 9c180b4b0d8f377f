"""The one interface every synthesis role (rephraser, tool generator, user simulator,
tool simulator, agent, judge) calls, whatever model serves it.

Messages and tools are OpenAI-style dicts (the storage format of docs/contracts.md),
so a backend for any OpenAI-compatible server, a local transformers model or one of
k2's own checkpoints can stand behind the same call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatRequest(BaseModel):
    """One chat completion request; its `key()` identifies it for the disk cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    temperature: float = Field(default=0.0, ge=0)
    seed: int = 0
    max_tokens: int = Field(default=256, ge=1)
    top_p: float = Field(default=1.0, gt=0, le=1)  # nucleus sampling (with temperature > 0)
    stop: tuple[str, ...] = ()  # the reply ends before the first of these strings

    def key(self, backend_id: str) -> str:
        fields = self.model_dump()
        for name in _LATER_FIELDS:  # at their defaults, keys of older cache entries stay valid
            if fields[name] == type(self).model_fields[name].default:
                del fields[name]
        payload = json.dumps({"backend": backend_id, **fields}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


_LATER_FIELDS = ("top_p", "stop")


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class ChatResponse(BaseModel):
    """The assistant message (OpenAI-style: `content`, optional `tool_calls`) and token usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: dict[str, Any]
    usage: Usage
    cached: bool = False
    # why the turn ended: "stop" (end of turn or a stop string), "length" (max_tokens or the context), "tool_calls"
    finish_reason: FinishReason = "stop"


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers chat requests. `backend_id` names the model and settings (cache keys use it)."""

    backend_id: str

    def complete(self, request: ChatRequest) -> ChatResponse: ...


@runtime_checkable
class BatchingBackend(ChatBackend, Protocol):
    """A backend that answers several requests in one forward pass (`k2 serve` batches concurrent requests).

    `prepare` does the per-request work (prompt, budget) and raises `RequestError` for that request alone;
    `complete_prepared` answers a list of prepared requests, in order."""

    def prepare(self, request: ChatRequest) -> Any: ...

    def complete_prepared(self, prepared: list[Any]) -> list[ChatResponse]: ...
