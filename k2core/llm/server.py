"""An OpenAI-compatible HTTP server (`/v1/models`, `/v1/chat/completions`) for any backend, as the official
`openai` client uses it: tools, streaming (SSE), `n`, `stop`, `seed`, `temperature`, `top_p`, `max_tokens` /
`max_completion_tokens`, `stream_options.include_usage`, and `finish_reason` `stop` / `length` / `tool_calls`.

Dependency-free (`http.server`, one thread per connection), meant for 127.0.0.1. What it cannot honour
(`logprobs`, penalties, `tool_choice` other than "auto", unknown parameters, ...) is answered with a 400 in
OpenAI's error shape naming the parameter. A missing temperature, seed or max_tokens takes `ChatRequest`'s
default (greedy, seed 0, 256 tokens), so answers are reproducible; choice i of `n` uses seed + i.

Tool call ids: the client's ids (`call_abc123`, anything) are mapped, per request, to K2's
`functions.NAME:IDX` (IDX = position in its assistant turn) in the assistant turns and in the tool results
that answer them. Calls in the reply get fresh `call_...` ids (K2 numbers calls per turn, so its own ids
repeat across a conversation).

`POST /update_weights_from_disk {"model_path": FOLDER}` (SGLang's route) makes a k2 or local backend serve another
folder's weights from then on, for RL rollouts from this server (`k2core.llm.reload`, docs/distributed.md).

Concurrent requests to a batching backend (k2 checkpoints, local HF models) go through a `Batcher` and are
answered in one forward pass. A streamed reply is sent once it is generated, as OpenAI-style chunks (role,
content pieces, tool-call pieces, finish_reason, optional usage, `[DONE]`): clients see the same events as
from OpenAI, not earlier tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from k2core.chat import tool_call_id
from k2core.chat.format import TOOL_CALL_ID_RE
from k2core.llm.base import BatchingBackend, ChatBackend, ChatRequest, ChatResponse
from k2core.llm.batcher import Batcher
from k2core.llm.errors import BackendError, RequestError
from k2core.llm.reload import ReloadUnsupported, reload_backend

log = logging.getLogger(__name__)

MAX_N = 128  # OpenAI's own limit
ARGUMENT_PIECE = 8  # characters of tool-call arguments per streamed delta
# Parameters that do not change the answer (bookkeeping on OpenAI's side): accepted and ignored.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})
# Parameters served only at their OpenAI default value.
DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "logprobs": (False,),
    "top_logprobs": (0,), "parallel_tool_calls": (True,), "tool_choice": ("auto",),
    "response_format": ({"type": "text"},),
}
SERVED = frozenset({"model", "messages", "tools", "stream", "stream_options", "n", "stop", "seed", "temperature",
                    "top_p", "max_tokens", "max_completion_tokens"})


class ParameterError(RequestError):
    """A request this server cannot serve, naming the offending parameter (OpenAI's `error.param`)."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


class _NotFound(LookupError):
    pass


def _text(content: Any, where: str) -> Any:
    """Content as a string: OpenAI clients may send a list of parts; only text parts can be served."""
    if not isinstance(content, list):
        return content
    if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
        raise ParameterError(where, f"{where}: only text content parts are supported")
    return "".join(p.get("text", "") for p in content)


class CallIds:
    """The client's tool call ids <-> K2's `functions.NAME:IDX`, for one request's conversation."""

    def __init__(self) -> None:
        self.to_k2: dict[str, str] = {}

    def assistant_calls(self, calls: Any, where: str) -> list[dict[str, Any]]:
        """An assistant turn's calls with K2 ids (a later turn reusing a client id wins, as a client means it)."""
        if not isinstance(calls, list):
            raise ParameterError(where, f"{where} must be a list")
        out = []
        for index, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ParameterError(where, f"{where}[{index}] must be a function call with a name")
            k2_id = tool_call_id(function["name"], index)
            if isinstance(call.get("id"), str):
                self.to_k2[call["id"]] = k2_id
            arguments = function.get("arguments", "{}")
            out.append({"id": k2_id, "type": "function", "function": {
                "name": function["name"],
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)}})
        return out

    def result_id(self, call_id: Any, where: str) -> str:
        """The K2 id a tool result answers: the mapped id of an earlier call, or an id already in K2's form."""
        if call_id in self.to_k2:
            return self.to_k2[call_id]
        if isinstance(call_id, str) and TOOL_CALL_ID_RE.fullmatch(call_id):
            return call_id
        raise ParameterError(where, f"{where} {call_id!r} answers no tool call of an earlier assistant message")


def _message(message: Any, i: int, ids: CallIds) -> dict[str, Any]:
    """One client message in the form backends take: no null fields (clients send `"tool_calls": null`,
    `"refusal": null`), `developer` as `system`, text content, K2 tool call ids."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ParameterError("messages", f"{where} must be a JSON object")
    out = {key: value for key, value in message.items() if value is not None}
    if out.get("role") == "developer":
        out["role"] = "system"
    if "content" in out:
        out["content"] = _text(out["content"], f"{where}.content")
    if out.get("role") == "assistant" and out.get("tool_calls"):
        out["tool_calls"] = ids.assistant_calls(out["tool_calls"], f"{where}.tool_calls")
    if out.get("role") == "tool":
        out["tool_call_id"] = ids.result_id(out.get("tool_call_id"), f"{where}.tool_call_id")
    return out


def _stop(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ParameterError("stop", "stop must be a string or a list of strings")
    return tuple(v for v in values if v)


@dataclass(frozen=True)
class Completion:
    """What one request body asks for: the backend request of choice 0 (choice i: seed + i), and how to answer."""

    request: ChatRequest
    n: int = 1
    stream: bool = False
    include_usage: bool = False


def _check_parameters(body: dict[str, Any]) -> None:
    for name, value in body.items():
        if value is None or name in SERVED or name in IGNORED:
            continue
        if name not in DEFAULT_ONLY:
            raise ParameterError(name, f"unrecognized request argument supplied: {name}")
        if value not in DEFAULT_ONLY[name]:
            raise ParameterError(name, f"{name}={json.dumps(value)} is not supported by this server; "
                                       f"leave it out or send {json.dumps(DEFAULT_ONLY[name][0])}")


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ParameterError("stream", "stream must be true or false")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise ParameterError("stream_options", "stream_options is only allowed with stream=true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ParameterError("stream_options", "stream_options supports only include_usage")
    return stream, bool(options.get("include_usage"))


def chat_request(body: Any, model_name: str) -> Completion:
    """What an OpenAI request body asks of `model_name`, refusing what this server cannot honour."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ParameterError("messages", "the body must be a JSON object with a 'messages' list")
    if body.get("model") not in (None, model_name):
        raise _NotFound(f"model {body['model']!r} is not served here; this server serves {model_name!r}")
    _check_parameters(body)
    stream, include_usage = _streaming(body)
    n = body.get("n") if body.get("n") is not None else 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise ParameterError("n", f"n must be an integer from 1 to {MAX_N}")
    ids = CallIds()
    fields: dict[str, Any] = {"messages": [_message(m, i, ids) for i, m in enumerate(body["messages"])],
                              "tools": body.get("tools") or []}
    for name in ("temperature", "seed", "top_p"):
        if body.get(name) is not None:
            fields[name] = body[name]
    if body.get("stop") is not None:
        fields["stop"] = _stop(body["stop"])
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            fields["max_tokens"] = body[name]
            break
    try:
        request = ChatRequest(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        if param == "max_tokens" and body.get("max_completion_tokens") is not None:
            param = "max_completion_tokens"
        raise ParameterError(param, f"{param}: {first['msg']}") from None
    return Completion(request, n, stream, include_usage)


class ChatServer(ThreadingHTTPServer):
    """Serves one backend under one model name; `url` is the base URL clients want (ending in /v1).

    A batching backend answers concurrent requests together (`max_batch` per forward pass, gathered for
    `batch_window_s`); `max_batch=1` answers them one at a time."""

    daemon_threads = True

    def __init__(self, backend: ChatBackend, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                 max_batch: int = 8, batch_window_s: float = 0.005) -> None:
        super().__init__((host, port), _Handler)
        self.backend, self.model_name = backend, model_name
        batching = isinstance(backend, BatchingBackend) and max_batch > 1
        self.batcher = Batcher(backend, max_batch, batch_window_s) if batching else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def answer(self, completion: Completion) -> list[ChatResponse]:
        """The n responses (choice i sampled with seed + i), batched when the backend allows it."""
        requests = [completion.request.model_copy(update={"seed": completion.request.seed + i})
                    for i in range(completion.n)]
        if self.batcher is None:
            return [self.backend.complete(r) for r in requests]
        prepared = [self.batcher.backend.prepare(r) for r in requests]  # a RequestError here is this request's alone
        futures = [self.batcher.submit(p) for p in prepared]
        return [future.result() for future in futures]

    def server_close(self) -> None:
        super().server_close()
        if self.batcher is not None:
            self.batcher.close()


def _reply_ids(completion_id: str, choice: int, response: ChatResponse) -> list[dict[str, Any]]:
    """The reply's tool calls with fresh ids, unique per completion, choice and call."""
    calls = []
    for index, call in enumerate(response.message.get("tool_calls") or []):
        digest = hashlib.sha256(f"{completion_id}:{choice}:{index}".encode()).hexdigest()[:24]
        calls.append({"id": f"call_{digest}", "type": "function", "function": dict(call["function"])})
    return calls


def _finish_reason(response: ChatResponse) -> str:
    """A turn that ended normally with tool calls is `tool_calls` (also for backends and cache entries that only
    say `stop`)."""
    if response.finish_reason == "stop" and response.message.get("tool_calls"):
        return "tool_calls"
    return response.finish_reason


def _usage(responses: list[ChatResponse]) -> dict[str, int]:
    """OpenAI counts the prompt once however many choices were sampled."""
    prompt = responses[0].usage.prompt_tokens
    completion = sum(r.usage.completion_tokens for r in responses)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(completion_id: str, model_name: str, responses: list[ChatResponse]) -> dict[str, Any]:
    """The OpenAI `chat.completion` reply."""
    choices = []
    for index, response in enumerate(responses):
        message: dict[str, Any] = {"role": "assistant", "content": response.message.get("content") or ""}
        calls = _reply_ids(completion_id, index, response)
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(response)})
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "choices": choices, "usage": _usage(responses)}


def _pieces(text: str) -> list[str]:
    """Content in word-sized pieces (each with its trailing whitespace; long words every 8 characters), about as
    a token stream delivers it."""
    return re.findall(r"\S{1,8}\s*|\s+", text)


def _choice_deltas(completion_id: str, index: int, response: ChatResponse) -> Iterator[dict[str, Any]]:
    yield {"role": "assistant", "content": ""}
    for piece in _pieces(response.message.get("content") or ""):
        yield {"content": piece}
    for call_index, call in enumerate(_reply_ids(completion_id, index, response)):
        function = call["function"]
        yield {"tool_calls": [{"index": call_index, "id": call["id"], "type": "function",
                               "function": {"name": function["name"], "arguments": ""}}]}
        arguments = function["arguments"]
        for start in range(0, len(arguments), ARGUMENT_PIECE):
            yield {"tool_calls": [{"index": call_index,
                                   "function": {"arguments": arguments[start:start + ARGUMENT_PIECE]}}]}


def stream_chunks(completion_id: str, model_name: str, responses: list[ChatResponse], include_usage: bool
                  ) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply: per choice its role, content and tool-call
    deltas and a final chunk with its finish_reason; then, when asked, one usage chunk with no choices."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_name}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    for index, response in enumerate(responses):
        for delta in _choice_deltas(completion_id, index, response):
            yield {**head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}],
                   **extra}
        yield {**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                    "finish_reason": _finish_reason(response)}], **extra}
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(responses)}


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

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        """Server-sent events, in HTTP/1.1 chunked transfer encoding (the connection stays usable)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
        for event in events:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _error(self, status: HTTPStatus, kind: str, message: str, param: str | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")
        model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "k2"}
        self._send(HTTPStatus.OK, {"object": "list", "data": [model]})

    def _update_weights(self, raw: bytes) -> None:
        """SGLang's `POST /update_weights_from_disk {"model_path": ...}`: serve another folder's weights from now
        on (`k2core.llm.reload`); answers `{"success", "message", "backend_id"}` once the new weights serve."""
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as error:
            return self._send(HTTPStatus.BAD_REQUEST, {"success": False, "message": f"body is not JSON: {error}"})
        path = body.get("model_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path:
            return self._send(HTTPStatus.BAD_REQUEST, {"success": False,
                                                       "message": "send {\"model_path\": \"<model folder>\"}"})
        try:
            backend_id = reload_backend(self.server.backend, path)
        except ReloadUnsupported as error:
            return self._send(HTTPStatus.NOT_IMPLEMENTED, {"success": False, "message": str(error)})
        except Exception as error:  # a missing folder, a bad manifest, ...: the old weights keep serving
            return self._send(HTTPStatus.BAD_REQUEST, {"success": False,
                                                       "message": f"{path}: {type(error).__name__}: {error}"})
        self._send(HTTPStatus.OK, {"success": True, "message": f"now serving {path}", "backend_id": backend_id})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") == "/update_weights_from_disk":
            return self._update_weights(raw)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")
        name = self.server.model_name
        try:
            completion = chat_request(json.loads(raw or b"null"), name)
            responses = self.server.answer(completion)
        except json.JSONDecodeError as error:
            return self._error(HTTPStatus.BAD_REQUEST, "invalid_request_error", f"body is not JSON: {error}")
        except RequestError as error:
            return self._error(HTTPStatus.BAD_REQUEST, "invalid_request_error", str(error),
                               getattr(error, "param", None))
        except _NotFound as error:
            return self._error(HTTPStatus.NOT_FOUND, "invalid_request_error", str(error), "model")
        except BackendError as error:
            return self._error(HTTPStatus.BAD_GATEWAY, "backend_error", str(error))
        except Exception as error:  # the server keeps running; the client learns what broke
            log.exception("chat completion failed")
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "server_error", f"{type(error).__name__}: {error}")
        completion_id = f"chatcmpl-{completion.request.key(self.server.backend.backend_id)[:24]}"
        if completion.stream:
            return self._stream(stream_chunks(completion_id, name, responses, completion.include_usage))
        self._send(HTTPStatus.OK, completion_body(completion_id, name, responses))

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


@contextmanager
def running_server(backend: ChatBackend, model_name: str, host: str = "127.0.0.1", port: int = 0,
                   max_batch: int = 8, batch_window_s: float = 0.005) -> Iterator[ChatServer]:
    """A server answering in a background thread (port 0 picks a free port); shut down on exit."""
    server = ChatServer(backend, model_name, host, port, max_batch, batch_window_s)
    thread = threading.Thread(target=server.serve_forever, name="k2-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
