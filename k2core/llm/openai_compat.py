"""Any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, llama.cpp, a hosted K2, `k2 serve`).

Plain HTTP with httpx: retries with exponential backoff on 429, 5xx and connection errors (a
`Retry-After` header wins), and a client-side cap on requests per minute shared by all threads that
use one backend object.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import httpx

from k2core.llm.base import ChatRequest, ChatResponse, Usage
from k2core.llm.config import OpenAILLMConfig
from k2core.llm.errors import BackendError, RequestError
from k2core.llm.messages import assistant_message

MAX_DELAY_S = 60.0


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart (no bursts: simple and predictable)."""

    def __init__(self, requests_per_minute: float | None) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(start - now)


def _retry_after(response: httpx.Response | None) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def response_from_openai(data: dict[str, Any]) -> ChatResponse:
    """Our `ChatResponse` from an OpenAI chat.completion body (first choice; ids made K2's)."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = [(c["function"]["name"], _arguments(c["function"].get("arguments", "{}")))
                 for c in message.get("tool_calls") or []]
    except (KeyError, IndexError, TypeError) as error:
        raise BackendError(f"not a chat.completion reply ({error!r}): {json.dumps(data)[:300]}") from None
    usage = data.get("usage") or {}  # some servers send none: count 0 rather than guess
    counts = {name: usage.get(name) or 0 for name in ("prompt_tokens", "completion_tokens")}
    reason = choice.get("finish_reason")  # anything else ("content_filter", none): the turn ended
    return ChatResponse(message=assistant_message(message.get("content") or "", calls), usage=Usage(**counts),
                        finish_reason=reason if reason in ("length", "tool_calls") else "stop")


class OpenAIBackend:
    """Chat completions over HTTP; `backend_id` names the server and the model."""

    def __init__(self, cfg: OpenAILLMConfig) -> None:
        base_url = os.environ.get(cfg.base_url_env)
        if not base_url:
            raise ValueError(f"set {cfg.base_url_env} to the server's base URL, e.g. http://127.0.0.1:8000/v1")
        self.cfg = cfg
        self.base_url = base_url.rstrip("/")
        self.backend_id = f"openai:{self.base_url}:{cfg.model}"
        api_key = os.environ.get(cfg.api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=cfg.timeout_s)
        self.limiter = RateLimiter(cfg.requests_per_minute)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "seed": request.seed,
            "max_tokens": request.max_tokens,
        }
        if request.tools:
            body["tools"] = request.tools
        if request.top_p != 1.0:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        failure = ""
        last_error: Exception | None = None  # the transient fault behind a give-up, so callers may retry later
        for attempt in range(self.cfg.max_retries + 1):
            self.limiter.wait()
            response: httpx.Response | None = None
            try:
                response = self.client.post("/chat/completions", json=body)
            except httpx.TransportError as error:
                failure, last_error = f"{type(error).__name__}: {error}", error
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except json.JSONDecodeError:
                        raise BackendError(f"{self.base_url} sent a non-JSON reply: {response.text[:300]}") from None
                failure = f"HTTP {response.status_code}: {response.text[:300]}"
                last_error = httpx.HTTPStatusError(failure, request=response.request, response=response)
                if response.status_code in (400, 413, 422):  # this request cannot be served (e.g. context too long)
                    raise RequestError(f"{self.base_url} refused the request: {failure}")
                if response.status_code != 429 and response.status_code < 500:  # auth, URL, model name: config
                    raise BackendError(f"{self.base_url} refused the request: {failure}")
            if attempt < self.cfg.max_retries:
                delay = _retry_after(response)
                time.sleep(min(delay if delay is not None else self.cfg.backoff_s * 2**attempt, MAX_DELAY_S))
        raise BackendError(
            f"{self.base_url}: gave up after {self.cfg.max_retries + 1} attempts; last: {failure}"
        ) from last_error

    def complete(self, request: ChatRequest) -> ChatResponse:
        return response_from_openai(self._post(self._body(request)))
