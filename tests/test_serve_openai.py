"""`k2 serve` as the official `openai` client uses it: a real server on 127.0.0.1 (port 0) in front of a tiny K2
checkpoint, and of the embedded SmolLM2 (integration). Answers are checked against the backend called directly."""

import json
import threading

import openai
import pytest

from k2core.chat import IM_END, TOOL_CALL_ARG_BEGIN, TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN, TOOL_CALLS_END
from k2core.llm import ChatRequest, K2LLMConfig, LocalLLMConfig, make_backend
from k2core.llm import k2_checkpoint
from k2core.llm.server import running_server
from k2core.rl.encoding import prompt_ids
from tests.tiny_k2 import tiny_checkpoint

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
HELLO = [{"role": "user", "content": "Hello there, what is the weather in Paris today?"}]
MODEL = "tiny-k2"


@pytest.fixture(scope="module")
def k2(tmp_path_factory):
    return make_backend(K2LLMConfig(kind="k2", path=str(tiny_checkpoint(tmp_path_factory.mktemp("serve")))))


@pytest.fixture(scope="module")
def served(k2):
    with running_server(k2, MODEL) as server:
        yield server, openai.OpenAI(base_url=server.url, api_key="sk-unused", max_retries=0)


def direct(k2, messages=HELLO, **fields):
    return k2.complete(ChatRequest(messages=messages, **fields))


def test_answer_and_usage_are_the_backends(k2, served):
    _, client = served
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6)
    expected = direct(k2, max_tokens=6)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert choice.message.role == "assistant" and choice.message.content == expected.message["content"]
    assert reply.usage.prompt_tokens == len(prompt_ids(k2.loaded.tokenizer, HELLO)) == expected.usage.prompt_tokens
    assert reply.usage.completion_tokens == expected.usage.completion_tokens == 6  # random weights: no early end
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6
    assert choice.finish_reason == "length"  # cut at max_tokens
    again = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=6)
    assert again.choices[0].message.content == choice.message.content


def test_stop_strings_cut_the_reply_and_finish_with_stop(k2, served):
    _, client = served
    full = direct(k2, max_tokens=16).message["content"]  # random weights: bytes, some not UTF-8 on their own
    word = next(c for c in full[1:] if c != "\ufffd")
    cut = full[: full.index(word)]
    for stop in (word, [word, "never-generated"]):
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, stop=stop)
        assert reply.choices[0].message.content == cut
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens < 16


def test_stream_delivers_the_same_answer_in_chunks(k2, served):
    _, client = served
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content and len([c for c in chunks if c.choices]) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    plain = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_n_choices_and_seeds(k2, served):
    _, client = served
    ask = dict(model=MODEL, messages=HELLO, max_tokens=6, temperature=1.0)
    reply = client.chat.completions.create(n=2, seed=5, **ask)
    assert [c.index for c in reply.choices] == [0, 1]
    expected = [direct(k2, max_tokens=6, temperature=1.0, seed=s) for s in (5, 6)]  # choice i: seed + i
    assert [c.message.content for c in reply.choices] == [e.message["content"] for e in expected]
    assert reply.usage.completion_tokens == sum(e.usage.completion_tokens for e in expected)
    assert reply.usage.prompt_tokens == expected[0].usage.prompt_tokens  # the prompt counts once
    assert client.chat.completions.create(n=2, seed=5, **ask).choices == reply.choices
    other = client.chat.completions.create(seed=11, **ask).choices[0].message.content
    assert other != reply.choices[0].message.content
    streamed = list(client.chat.completions.create(n=2, seed=5, stream=True, **ask))
    for index, choice in enumerate(reply.choices):
        parts = [c.choices[0].delta.content or "" for c in streamed if c.choices and c.choices[0].index == index]
        assert "".join(parts) == choice.message.content


def scripted_turn(k2, monkeypatch, text):
    """The tiny model 'generates' `text` (its tokens go through decoding, parsing and the server as usual)."""
    ids = k2.loaded.tokenizer.encode(text, add_special_tokens=False)
    monkeypatch.setattr(k2_checkpoint, "generate", lambda *args, **kwargs: [ids])


def test_tool_calls_plain_and_streamed(k2, served, monkeypatch):
    _, client = served
    section = "".join(f'{TOOL_CALL_BEGIN}functions.get_weather:{i}{TOOL_CALL_ARG_BEGIN}{{"city": "{city}"}}'
                      f"{TOOL_CALL_END}" for i, city in enumerate(("Paris", "Oslo")))
    scripted_turn(k2, monkeypatch, f"Checking both.{TOOL_CALLS_BEGIN}{section}{TOOL_CALLS_END}{IM_END}")
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER])
    message, finish = reply.choices[0].message, reply.choices[0].finish_reason
    assert finish == "tool_calls" and message.content == "Checking both."
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    ids = [c.id for c in message.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    with client.chat.completions.stream(model=MODEL, messages=HELLO, tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    def triples(calls):
        return [(c.id, c.function.name, c.function.arguments) for c in calls]

    assert triples(final.choices[0].message.tool_calls) == triples(message.tool_calls)
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content == "Checking both."
    pieces = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(pieces) > 2  # the arguments arrived in several deltas, reassembled by the client


def test_client_call_ids_and_nameless_tool_results(k2, served):
    _, client = served
    history = HELLO + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_def456", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_def456", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=6)
    k2_history = HELLO + [
        {"role": "assistant", "content": "", "tool_calls": [
            {**history[1]["tool_calls"][i], "id": f"functions.get_weather:{i}"} for i in (0, 1)]},
        {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "rain"},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
    ]
    expected = direct(k2, k2_history, tools=[WEATHER], max_tokens=6)
    assert reply.choices[0].message.content == expected.message["content"]
    assert reply.usage.prompt_tokens == len(prompt_ids(k2.loaded.tokenizer, k2_history, [WEATHER]))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=history[:2] + [{**history[2], "tool_call_id": "call_zz"}])
    assert refused.value.body["param"] == "messages[2].tool_call_id" and "call_zz" in refused.value.body["message"]


@pytest.mark.parametrize("extra, param", [
    ({"logprobs": True}, "logprobs"), ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"tool_choice": "required"}, "tool_choice"), ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"extra_body": {"guided_json": {}}}, "guided_json"), ({"top_p": 0}, "top_p"), ({"n": 500}, "n"),
    ({"stop": [1]}, "stop"), ({"max_completion_tokens": 0}, "max_completion_tokens"),
])
def test_what_is_not_served_is_refused_naming_the_parameter(served, extra, param):
    _, client = served
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=HELLO, **extra)
    assert refused.value.status_code == 400
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == param and param in error["message"]
    accepted = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, frequency_penalty=0,
                                              tool_choice="auto", user="u1", top_p=0.9)
    assert accepted.choices[0].finish_reason == "length"


def concurrently(client, asks):
    """Each request body from its own thread, released together; replies in order."""
    replies = [None] * len(asks)
    barrier = threading.Barrier(len(asks))

    def ask(i):
        barrier.wait()
        replies[i] = client.chat.completions.create(**asks[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_concurrent_greedy_requests_share_a_forward_pass(k2):
    questions = [f"What is the weather in city {i} on day {i * 3}?" for i in range(4)]
    with running_server(k2, MODEL, max_batch=4, batch_window_s=0.5) as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-unused", max_retries=0)
        asks = [dict(model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=4 + i)
                for i, q in enumerate(questions)]
        replies = concurrently(client, asks)
        sizes = server.batcher.batch_sizes
    assert max(sizes) > 1 and sum(sizes) == 4
    for ask, reply in zip(asks, replies):  # the same tokens as each request alone (own budget honoured)
        alone = direct(k2, ask["messages"], max_tokens=ask["max_tokens"])
        assert reply.choices[0].message.content == alone.message["content"]
        assert reply.usage.completion_tokens == alone.usage.completion_tokens == ask["max_tokens"]


@pytest.mark.integration
def test_smollm2_through_the_openai_client():
    """The embedded SmolLM2: a turn that ends by itself finishes with `stop`, one cut by max_tokens with `length`;
    stop strings, streaming, and concurrent greedy requests batched with the answers of one-at-a-time runs."""
    local = make_backend(LocalLLMConfig(kind="local"))
    questions = ["What is 2+3?", "Name the capital of France.", "What colour is the sky?"]
    with running_server(local, "smollm2", max_batch=4, batch_window_s=0.5) as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-unused", max_retries=0)
        ask = dict(model="smollm2", messages=[{"role": "user", "content": questions[0]}], max_tokens=48)
        done = client.chat.completions.create(**ask)
        cut = client.chat.completions.create(**{**ask, "max_tokens": 3})
        stopped = client.chat.completions.create(**ask, stop=["5"])
        streamed = list(client.chat.completions.create(**ask, stream=True))
        asks = [dict(ask, messages=[{"role": "user", "content": q}], max_tokens=24) for q in questions]
        together = concurrently(client, asks)
        sizes = server.batcher.batch_sizes
    assert done.choices[0].finish_reason == "stop" and "5" in done.choices[0].message.content
    assert done.usage.completion_tokens < 48
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    assert stopped.choices[0].finish_reason == "stop" and "5" not in stopped.choices[0].message.content
    assert done.choices[0].message.content.startswith(stopped.choices[0].message.content)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == done.choices[0].message.content
    assert max(sizes[-3:]) > 1
    for request, reply in zip(asks, together):
        alone = local.complete(ChatRequest(messages=request["messages"], max_tokens=24))
        assert reply.choices[0].message.content == alone.message["content"]
