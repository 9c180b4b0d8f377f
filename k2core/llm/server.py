"""An OpenAI-compatible HTTP server (`/v1/models`, `/v1/chat/completions` with tools) for any backend.

Dependency-free (`http.server`, one thread per connection), meant for 127.0.0.1: trying a checkpoint
with any OpenAI client, and testing the `openai` backend against a real server. Not supported (answered
with 400): streaming, `n` > 1, and `tool_choice` other than "auto". Defaults for a missing temperature,
seed and max_tokens are `ChatRequest`'s (greedy, seed 0, 256 tokens), so answers are reproducible.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from k2core.llm.base import ChatBackend, ChatRequest
from k2core.llm.errors import BackendError, RequestError

log = logging.getLogger(__name__)


class _NotFound(LookupError):
    pass


def _text(content: Any) -> Any:
    """Content as a string: OpenAI clients may send a list of parts; only text parts can be served."""
    if not isinstance(content, list):
        return content
    if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
        raise RequestError("only text content parts are supported")
    return "".join(p.get("text", "") for p in content)


def _clean(message: Any) -> Any:
    """A message without null fields (clients send `"tool_calls": null`, `"refusal": null`, ...); the newer
    `developer` role is the system role."""
    if not isinstance(message, dict):
        raise RequestError("each message must be a JSON object")
    out = {key: value for key, value in message.items() if value is not None}
    if out.get("role") == "developer":
        out["role"] = "system"
    if "content" in out:
        out["content"] = _text(out["content"])
    return out


def chat_request(body: Any, model_name: str) -> ChatRequest:
    """Our `ChatRequest` from an OpenAI request body, refusing what this server cannot honour."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise RequestError("the body must be a JSON object with a 'messages' list")
    if body.get("model") not in (None, model_name):
        raise _NotFound(f"model {body['model']!r} is not served here; this server serves {model_name!r}")
    if body.get("stream"):
        raise RequestError("streaming is not supported; send stream=false")
    if body.get("n") not in (None, 1):
        raise RequestError("only n=1 is supported")
    if body.get("tool_choice") not in (None, "auto"):
        raise RequestError("only tool_choice='auto' is supported")
    fields = {"messages": [_clean(m) for m in body["messages"]], "tools": body.get("tools") or []}
    for name in ("temperature", "seed"):
        if body.get(name) is not None:
            fields[name] = body[name]
    max_tokens = [body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    if max_tokens:
        fields["max_tokens"] = max_tokens[0]
    try:
        return ChatRequest(**fields)
    except ValidationError as error:
        raise RequestError(str(error)) from None


def chat_completion(backend: ChatBackend, model_name: str, body: Any) -> dict[str, Any]:
    """The OpenAI `chat.completion` reply to one request body."""
    request = chat_request(body, model_name)
    response = backend.complete(request)
    message = {"role": "assistant", "content": response.message.get("content") or ""}
    if response.message.get("tool_calls"):
        message["tool_calls"] = response.message["tool_calls"]
    usage = response.usage
    return {
        "id": f"chatcmpl-{request.key(backend.backend_id)[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.prompt_tokens + usage.completion_tokens},
    }


class ChatServer(ThreadingHTTPServer):
    """Serves one backend under one model name; `url` is the base URL clients want (ending in /v1)."""

    daemon_threads = True

    def __init__(self, backend: ChatBackend, model_name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__((host, port), _Handler)
        self.backend, self.model_name = backend, model_name

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"
    # Small responses on a kept-alive connection otherwise wait on Nagle + delayed ACK: ~47 ms -> ~1 ms per request.
    disable_nagle_algorithm = True

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, kind: str, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status.value}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")
        model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "k2"}
        self._send(HTTPStatus.OK, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")
        try:
            reply = chat_completion(self.server.backend, self.server.model_name, json.loads(raw or b"null"))
        except json.JSONDecodeError as error:
            return self._error(HTTPStatus.BAD_REQUEST, "invalid_request_error", f"body is not JSON: {error}")
        except RequestError as error:
            return self._error(HTTPStatus.BAD_REQUEST, "invalid_request_error", str(error))
        except _NotFound as error:
            return self._error(HTTPStatus.NOT_FOUND, "model_not_found", str(error))
        except BackendError as error:
            return self._error(HTTPStatus.BAD_GATEWAY, "backend_error", str(error))
        except Exception as error:  # the server keeps running; the client learns what broke
            log.exception("chat completion failed")
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "server_error", f"{type(error).__name__}: {error}")
        self._send(HTTPStatus.OK, reply)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


@contextmanager
def running_server(backend: ChatBackend, model_name: str, host: str = "127.0.0.1", port: int = 0
                   ) -> Iterator[ChatServer]:
    """A server answering in a background thread (port 0 picks a free port); shut down on exit."""
    server = ChatServer(backend, model_name, host, port)
    thread = threading.Thread(target=server.serve_forever, name="k2-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
