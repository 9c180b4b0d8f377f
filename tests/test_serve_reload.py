"""`k2 serve` swaps its weights on `POST /update_weights_from_disk` (SGLang's route), as RL rollouts from an inference
server need: later answers are those of the new checkpoint, the backend id moves (caches never mix the two), and a
bad folder leaves the old weights serving."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from k2core.llm import ChatRequest, K2LLMConfig, make_backend
from k2core.llm.cache import CachedBackend
from k2core.llm.reload import ReloadUnsupported, reload_backend
from k2core.llm.server import running_server
from k2core.model import K2ForCausalLM
from k2core.model.checkpoint import save_hf_folder
from k2core.storage import CheckpointIntegrityError
from tests.tiny_k2 import tiny_checkpoint

HELLO = [{"role": "user", "content": "Hello there, what is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints with one tokenizer and different weights (as successive RL iterations would publish)."""
    first = tiny_checkpoint(tmp_path_factory.mktemp("reload"))
    second = first.parent / "tiny-k2-next"
    model = K2ForCausalLM.from_pretrained(first)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save_hf_folder(model, PreTrainedTokenizerFast.from_pretrained(str(first)), second, stage="rl")  # with manifest
    return first, second


def _reply(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model="policy", messages=HELLO, max_tokens=12, temperature=0)
    return answer.choices[0].message.content or ""


def _direct(path) -> str:
    fresh = make_backend(K2LLMConfig(kind="k2", path=str(path)))
    return fresh.complete(ChatRequest(messages=HELLO, max_tokens=12)).message.get("content") or ""


def test_update_weights_from_disk_serves_the_new_checkpoint(checkpoints):
    first, second = checkpoints
    before, after = _direct(first), _direct(second)
    assert before != after  # the test would prove nothing with equal answers
    backend = make_backend(K2LLMConfig(kind="k2", path=str(first)))
    old_id = backend.backend_id
    with running_server(backend, "policy") as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-unused", max_retries=0)
        assert _reply(client) == before
        root = server.url.removesuffix("/v1")
        with ThreadPoolExecutor(4) as pool:  # requests in flight while the weights change all get an answer
            during = [pool.submit(_reply, client) for _ in range(4)]
            response = httpx.post(f"{root}/update_weights_from_disk", json={"model_path": str(second)}, timeout=120)
            assert all(f.result() in (before, after) for f in during)
        assert response.status_code == 200 and response.json()["success"] is True
        assert response.json()["backend_id"] == backend.backend_id != old_id
        assert _reply(client) == after
        missing = httpx.post(f"{root}/update_weights_from_disk", json={"model_path": str(first.parent / "gone")},
                             timeout=60)
        assert missing.status_code == 400 and "gone" in missing.json()["message"]
        assert not missing.json()["success"] and _reply(client) == after  # the old weights keep serving
        bad = httpx.post(f"{root}/update_weights_from_disk", json={"path": "x"}, timeout=60)
        assert bad.status_code == 400 and "model_path" in bad.json()["message"]


def test_a_corrupted_checkpoint_is_refused_and_the_cache_follows_the_reload(checkpoints, tmp_path):
    first, second = checkpoints
    broken = tmp_path / "broken"
    shutil.copytree(second, broken)
    with open(broken / "model.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00" * 16)
    cached = CachedBackend(make_backend(K2LLMConfig(kind="k2", path=str(first))), tmp_path / "cache")
    old_id = cached.backend_id
    with pytest.raises(CheckpointIntegrityError, match="broken/model.safetensors: sha256 mismatch"):
        cached.reload_weights(broken)
    assert cached.backend_id == old_id
    new_id = cached.reload_weights(second)
    assert new_id == cached.inner.backend_id != old_id
    reply = cached.complete(ChatRequest(messages=HELLO, max_tokens=12))
    assert not reply.cached and reply.message.get("content") == _direct(second)


def test_an_endpoint_backend_cannot_reload():
    class Remote:
        backend_id = "openai:somewhere"

    with pytest.raises(ReloadUnsupported, match="openai:somewhere cannot reload"):
        reload_backend(Remote(), "/tmp")
