"""LLM backends: config, response cache, K2 checkpoints, `k2 serve` and the openai backend over real HTTP."""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest
from pydantic import ValidationError

from flows import serve
from k2core.chat import IM_END, TOOL_CALL_ARG_BEGIN, TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN, TOOL_CALLS_END, render
from k2core.llm import (
    BackendError, CachedBackend, ChatRequest, ChatResponse, K2LLMConfig, LocalLLMConfig, OpenAILLMConfig, RequestError,
    ResponseCache, Usage, make_backend, parse_llm_config,
)
from k2core.llm import k2_checkpoint, openai_compat
from k2core.transient import is_transient
from tests.process_tree import listening_ips
from k2core.llm.server import chat_request, running_server
from k2core.rl.encoding import prompt_ids
from tests.tiny_k2 import tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
HELLO = [{"role": "user", "content": "Hello there, what is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("k2ckpt"))


@pytest.fixture(scope="module")
def k2(checkpoint):
    return make_backend(K2LLMConfig(kind="k2", path=str(checkpoint)))


def test_config_picks_the_class_by_kind():
    assert isinstance(parse_llm_config({"kind": "k2", "path": "checkpoints/sft"}), K2LLMConfig)
    assert parse_llm_config({"kind": "local"}).path is None
    cfg = parse_llm_config({"kind": "openai", "model": "kimi-k2", "requests_per_minute": 30})
    assert isinstance(cfg, OpenAILLMConfig) and cfg.base_url_env == "OPENAI_BASE_URL"
    for bad in ({"kind": "k2"}, {"kind": "local", "pathh": "x"}, {"kind": "gpt"},
                {"kind": "local", "cache_dir": "s3://bucket/cache"}, {"kind": "openai", "model": "m", "max_retries": -1}):
        with pytest.raises(ValidationError):
            parse_llm_config(bad)


def test_k2_backend_answers_in_k2s_canonical_form(k2):
    request = ChatRequest(messages=HELLO, tools=[WEATHER], max_tokens=8)
    first, again = k2.complete(request), k2.complete(request)
    assert first == again and first.cached is False
    assert first.message["role"] == "assistant" and isinstance(first.message["content"], str)
    assert first.usage.prompt_tokens == len(prompt_ids(k2.loaded.tokenizer, HELLO, [WEATHER]))
    assert 1 <= first.usage.completion_tokens <= 8
    render(HELLO + [first.message], [WEATHER])  # the answer can go straight back into a K2 conversation
    sampled = [k2.complete(ChatRequest(messages=HELLO, temperature=1.0, seed=s, max_tokens=8)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0].message != sampled[2].message


def test_k2_backend_parses_and_renumbers_tool_calls(k2, monkeypatch):
    section = "".join(f"{TOOL_CALL_BEGIN}functions.get_weather:{i}{TOOL_CALL_ARG_BEGIN}{{\"city\": \"{c}\"}}{TOOL_CALL_END}"
                      for i, c in ((3, "Paris"), (3, "Oslo")))
    text = f"Let me check.{TOOL_CALLS_BEGIN}{section}{TOOL_CALLS_END}{IM_END}"
    ids = k2.loaded.tokenizer.encode(text, add_special_tokens=False)
    monkeypatch.setattr(k2_checkpoint, "generate", lambda *args, **kwargs: [ids])
    message = k2.complete(ChatRequest(messages=HELLO, tools=[WEATHER])).message
    assert message["content"] == "Let me check."
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("functions.get_weather:0", {"city": "Paris"}), ("functions.get_weather:1", {"city": "Oslo"})]


def test_k2_backend_refuses_what_it_cannot_serve(k2):
    with pytest.raises(RequestError, match="context"):
        k2.complete(ChatRequest(messages=[{"role": "user", "content": "7" * 600}]))
    with pytest.raises(RequestError, match="chat format"):
        k2.complete(ChatRequest(messages=[{"role": "robot", "content": "hi"}]))


class Counting:
    """A backend that answers with the call count, to see whether the cache asked it."""

    backend_id = "counting"

    def __init__(self):
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        return ChatResponse(message={"role": "assistant", "content": f"answer {self.calls} to seed {request.seed}"},
                            usage=Usage(prompt_tokens=3, completion_tokens=4))


def test_cache_answers_a_repeated_request_without_the_backend(tmp_path):
    inner = Counting()
    cached = CachedBackend(inner, tmp_path)
    first = cached.complete(ChatRequest(messages=HELLO))
    second = cached.complete(ChatRequest(messages=HELLO))
    assert inner.calls == 1 and (first.cached, second.cached) == (False, True)
    assert second.message == first.message and second.usage == first.usage
    assert cached.complete(ChatRequest(messages=HELLO, seed=1)).message["content"] == "answer 2 to seed 1"
    reopened = CachedBackend(Counting(), tmp_path)  # another process, same folder
    assert reopened.complete(ChatRequest(messages=HELLO)).message == first.message and reopened.inner.calls == 0
    assert (cached.hits, cached.misses) == (1, 2)


_WRITER = """
import sys
from k2core.llm import ChatResponse, ResponseCache, Usage
cache = ResponseCache(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[2]) + 100):
    message = {"role": "assistant", "content": f"{sys.argv[3]} {i}"}
    cache.put(f"key{i}", "b", ChatResponse(message=message, usage=Usage(prompt_tokens=1, completion_tokens=1)))
"""


def test_cache_is_safe_for_two_processes(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), start, name], cwd=REPO)
               for start, name in (("0", "first"), ("50", "second"))]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = ResponseCache(tmp_path)
    assert len(cache) == 150
    shared = {cache.get(f"key{i}").message["content"].split()[0] for i in range(50, 100)}
    assert shared <= {"first", "second"}  # each shared key holds one complete answer, whoever wrote first


def test_make_backend_puts_the_cache_in_front(checkpoint, tmp_path):
    backend = make_backend(K2LLMConfig(kind="k2", path=str(checkpoint), cache_dir=str(tmp_path)))
    assert isinstance(backend, CachedBackend) and backend.backend_id.startswith("k2:tiny-k2:")
    request = ChatRequest(messages=HELLO, max_tokens=4)
    first, second = backend.complete(request), backend.complete(request)
    assert second.cached and second.message == first.message


def openai_backend(monkeypatch, url, model, **fields):
    monkeypatch.setenv("K2_TEST_LLM_URL", url)
    monkeypatch.setenv("K2_TEST_LLM_KEY", "sk-test")
    return make_backend(OpenAILLMConfig(kind="openai", model=model, base_url_env="K2_TEST_LLM_URL",
                                        api_key_env="K2_TEST_LLM_KEY", **fields))


def test_openai_backend_against_k2_serve(k2, monkeypatch):
    request = ChatRequest(messages=HELLO, tools=[WEATHER], max_tokens=6)
    with running_server(k2, "tiny-k2") as server:
        remote = openai_backend(monkeypatch, server.url, "tiny-k2")
        answer = remote.complete(request)
        models = httpx.get(f"{server.url}/models").json()
        wrong_model = openai_backend(monkeypatch, server.url, "gpt-9", max_retries=3)
        with pytest.raises(BackendError, match="404"):
            wrong_model.complete(request)
        parts = httpx.post(f"{server.url}/chat/completions",
                           json={"messages": [{"role": "user", "content": [{"type": "text", "text": HELLO[0]["content"]}]}],
                                 "tools": [WEATHER], "max_tokens": 6}).json()
    direct = k2.complete(request)
    assert answer.message == direct.message and answer.usage == direct.usage
    assert remote.backend_id == f"openai:{server.url}:tiny-k2"
    assert [m["id"] for m in models["data"]] == ["tiny-k2"]
    assert parts["choices"][0]["message"]["content"] == direct.message["content"]


class ToolCaller:
    """Answers every request with one tool call and remembers what it was asked."""

    backend_id = "tool-caller"

    def __init__(self):
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        call = {"id": "functions.get_weather:0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
        return ChatResponse(message={"role": "assistant", "content": "", "tool_calls": [call]},
                            usage=Usage(prompt_tokens=5, completion_tokens=7))


def test_tool_calls_cross_the_wire_in_openai_format(monkeypatch):
    caller = ToolCaller()
    history = HELLO + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_x1", "type": "function",
                                                              "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_x1", "name": "get_weather", "content": "error: city missing"},
    ]
    with running_server(caller, "caller") as server:
        raw = httpx.post(f"{server.url}/chat/completions", json={"messages": history, "tools": [WEATHER]}).json()
        answer = openai_backend(monkeypatch, server.url, "caller").complete(
            ChatRequest(messages=history, tools=[WEATHER], temperature=0.5, seed=9, max_tokens=33))
    assert raw["choices"][0]["finish_reason"] == "tool_calls" and raw["usage"]["total_tokens"] == 12
    assert answer.message["tool_calls"] == caller.complete(ChatRequest(messages=HELLO)).message["tool_calls"]
    received = caller.requests[1]
    assert (received.tools, received.temperature, received.seed, received.max_tokens) == ([WEATHER], 0.5, 9, 33)
    k2_call = {**history[1]["tool_calls"][0], "id": "functions.get_weather:0"}  # the client's id, made K2's
    assert received.messages[1] == {"role": "assistant", "tool_calls": [k2_call]}
    assert received.messages[2] == {**history[2], "tool_call_id": "functions.get_weather:0"}


class Flaky(BaseHTTPRequestHandler):
    """Answers with the next scripted status; 200 is a valid chat completion."""

    protocol_version = "HTTP/1.1"
    script: list = []
    seen: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.headers.get("Authorization"))
        status = type(self).script.pop(0)
        body = {"error": {"message": "try later"}}
        if status == 200:
            body = {"choices": [{"message": {"role": "assistant", "content": "five",
                                             "tool_calls": [{"id": "call_9", "type": "function", "function": {
                                                 "name": "get_weather", "arguments": {"city": "Oslo"}}}]}}],
                    "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Flaky.script, Flaky.seen = [], []
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_retries_then_answers(flaky, monkeypatch):
    _, url = flaky
    Flaky.script = [429, 503, 200]
    answer = openai_backend(monkeypatch, url, "m", backoff_s=0.01).complete(ChatRequest(messages=HELLO))
    assert answer.message == {"role": "assistant", "content": "five", "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}
    assert answer.usage == Usage(prompt_tokens=2, completion_tokens=1)
    assert Flaky.seen == ["Bearer sk-test"] * 3 and Flaky.script == []


def test_openai_backend_gives_up_and_does_not_retry_client_errors(flaky, monkeypatch):
    _, url = flaky
    Flaky.script = [500, 500, 500]
    with pytest.raises(BackendError, match="gave up after 2 attempts; last: HTTP 500") as gave_up:
        openai_backend(monkeypatch, url, "m", backoff_s=0.01, max_retries=1).complete(ChatRequest(messages=HELLO))
    assert is_transient(gave_up.value)  # an outage: a Prefect task around it may retry later
    Flaky.script = [400, 200]  # the request itself cannot be served: the caller may drop it and go on
    with pytest.raises(RequestError, match="HTTP 400"):
        openai_backend(monkeypatch, url, "m", backoff_s=0.01).complete(ChatRequest(messages=HELLO))
    assert Flaky.script == [200]
    Flaky.script = [401, 200]  # a configuration error (key, URL, model): stop
    with pytest.raises(BackendError, match="HTTP 401") as refused:
        openai_backend(monkeypatch, url, "m", backoff_s=0.01).complete(ChatRequest(messages=HELLO))
    assert Flaky.script == [200] and not is_transient(refused.value)


def test_openai_backend_retries_connection_errors(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = openai_backend(monkeypatch, f"http://127.0.0.1:{port}/v1", "m", backoff_s=0.01, max_retries=2)
    with pytest.raises(BackendError, match="gave up after 3 attempts; last: ConnectError") as gave_up:
        backend.complete(ChatRequest(messages=HELLO))
    assert is_transient(gave_up.value)


def test_rate_limiter_spaces_requests(monkeypatch):
    clock, sleeps = [100.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(openai_compat.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(openai_compat.time, "sleep", sleep)
    limiter = openai_compat.RateLimiter(requests_per_minute=120)
    for _ in range(3):
        limiter.wait()
    clock[0] += 5.0
    limiter.wait()
    assert sleeps == pytest.approx([0.0, 0.5, 0.5, 0.0])


@pytest.mark.integration
def test_k2_serve_command_serves_a_checkpoint(checkpoint):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": REPO}
    server = subprocess.Popen([sys.executable, "-m", "flows.serve", str(checkpoint), "--port", str(port),
                               "--device", "cpu"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(f"{url}/models").json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()
                time.sleep(0.5)
        reply = httpx.post(f"{url}/chat/completions", json={"model": "tiny-k2", "messages": HELLO, "max_tokens": 3})
        assert listening_ips([psutil.Process(server.pid)]) == {"127.0.0.1"}  # loopback unless --host says otherwise
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert models["data"][0]["id"] == "tiny-k2"
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] <= 3


def test_local_backend_uses_the_folders_chat_template_with_tools(checkpoint):
    """The tiny K2 folder through transformers: its template renders tools, so they go to the template
    (call arguments as objects, re-encoded by the template: given in that encoding here, tokens match)."""
    local = make_backend(LocalLLMConfig(kind="local", path=str(checkpoint)))
    assert local.loaded.native_tools and local.backend_id.startswith("local:tiny-k2:")
    history = HELLO + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "functions.get_weather:0", "type": "function",
                                                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": "sunny"},
    ]
    request = ChatRequest(messages=history, tools=[WEATHER], temperature=1.0, seed=4, max_tokens=6)
    first = local.complete(request)
    assert first == local.complete(request) and 1 <= first.usage.completion_tokens <= 6
    assert first.usage.prompt_tokens == len(prompt_ids(local.loaded.tokenizer, history, [WEATHER]))
    with pytest.raises(RequestError, match="context"):
        local.complete(ChatRequest(messages=[{"role": "user", "content": "7" * 600}]))


def test_k2_serve_reads_the_kind_from_the_folder_or_a_config_file(checkpoint, tmp_path):
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    k2_args = parser.parse_args([str(checkpoint)])
    assert serve.config_from_args(k2_args)["kind"] == "k2"
    assert serve.model_name(k2_args, {"path": str(checkpoint)}) == "tiny-k2"
    assert serve.config_from_args(parser.parse_args([str(tmp_path)]))["kind"] == "local"
    (tmp_path / "llm.yaml").write_text("kind: openai\nmodel: kimi-k2\nrequests_per_minute: 30\n")
    args = parser.parse_args(["--config", str(tmp_path / "llm.yaml")])
    values = serve.config_from_args(args)
    assert isinstance(parse_llm_config(values), OpenAILLMConfig) and serve.model_name(args, values) == "kimi-k2"
    with pytest.raises(ValueError, match="either"):
        serve.config_from_args(parser.parse_args([str(checkpoint), "--config", str(tmp_path / "llm.yaml")]))


def test_server_reads_openai_request_bodies():
    body = {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                       {"role": "user", "content": "hi", "name": None}],
            "n": None, "tool_choice": None, "max_tokens": None, "max_completion_tokens": 12, "temperature": 0.3}
    request = chat_request(body, "m").request
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (request.max_tokens, request.temperature, request.seed, request.tools) == (12, 0.3, 0, [])
    for bad in ({"n": 0}, {"stream": "yes"}, {"tool_choice": "required"}, {"max_completion_tokens": 0},
                {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, {"messages": "hi"}):
        with pytest.raises(RequestError):
            chat_request({**body, **bad}, "m")
    with pytest.raises(LookupError, match="serves 'm'"):
        chat_request({**body, "model": "other"}, "m")
