"""The one interface every synthesis role (rephraser, tool generator, user simulator,
tool simulator, agent, judge) calls, whatever model serves it.

Messages and tools are OpenAI-style dicts (the storage format of docs/contracts.md),
so a backend for any OpenAI-compatible server, a local transformers model or one of
k2's own checkpoints can stand behind the same call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class ChatRequest(BaseModel):
    """One chat completion request; its `key()` identifies it for the disk cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    temperature: float = Field(default=0.0, ge=0)
    seed: int = 0
    max_tokens: int = Field(default=256, ge=1)

    def key(self, backend_id: str) -> str:
        payload = json.dumps({"backend": backend_id, **self.model_dump()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


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


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers chat requests. `backend_id` names the model and settings (cache keys use it)."""

    backend_id: str

    def complete(self, request: ChatRequest) -> ChatResponse: ...
