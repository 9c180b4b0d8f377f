"""One of this project's checkpoints as a chat backend: K2's chat format in, K2's tool-call parser out."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import torch

from k2core.chat import ChatFormatError, parse_assistant
from k2core.llm.base import ChatRequest, ChatResponse, Usage
from k2core.llm.config import K2LLMConfig
from k2core.llm.devices import DTYPES, resolve_device
from k2core.llm.errors import RequestError
from k2core.llm.fingerprint import model_fingerprint
from k2core.llm.loglik import continuation_logprobs, document_prefix
from k2core.llm.messages import assistant_message, strip_special_tokens
from k2core.model import K2ForCausalLM, generate
from k2core.rl.encoding import prompt_ids, stop_token_ids


class _Loaded:
    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import PreTrainedTokenizerFast

        # the model first: loading it verifies the folder's manifest, tokenizer files included
        self.model = K2ForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json; pass a published checkpoint (checkpoints/sft)")
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        self.device = device
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.context = int(self.model.config.max_position_embeddings)
        self.lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _load(path: Path, device: torch.device, dtype: torch.dtype) -> _Loaded:
    return _Loaded(path, device, dtype)


class K2Backend:
    """Renders the conversation with `k2core.chat`, samples with `k2core.model.generate`, parses the turn back.

    Malformed tool calls are dropped (the assistant message keeps only well-formed ones, renumbered);
    a turn cut off by `max_tokens` is returned as far as it got.
    """

    def __init__(self, cfg: K2LLMConfig) -> None:
        path = Path(cfg.path).resolve()
        self.loaded = _load(path, resolve_device(cfg.device), DTYPES[cfg.dtype])
        self.backend_id = f"k2:{path.name}:{model_fingerprint(path)}:{cfg.dtype}"

    def complete(self, request: ChatRequest) -> ChatResponse:
        loaded = self.loaded
        with loaded.lock:
            response, _ = complete_k2(loaded.model, loaded.tokenizer, loaded.stop_ids, loaded.context, request)
        return response

    def loglikelihood(self, prompt: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after the raw-text `prompt`, which starts a document (after EOS, as
        in pretraining), not a chat turn."""
        loaded = self.loaded
        prefix = [document_prefix(loaded.tokenizer)]
        with loaded.lock:
            return continuation_logprobs(loaded.model, loaded.tokenizer, prefix, prompt, continuations, loaded.context)


def complete_k2(model: K2ForCausalLM, tokenizer: Any, stop_ids: list[int], context: int | None, request: ChatRequest
                ) -> tuple[ChatResponse, int]:
    """One assistant turn of a K2 model in memory: the conversation rendered in K2's chat format, sampled (cut at
    `context`), parsed back with K2's tool-call parser. Returns the reply and how many tool calls the parser dropped
    as malformed (the reply keeps only well-formed calls, renumbered)."""
    try:
        ids = prompt_ids(tokenizer, request.messages, request.tools or None)
    except ChatFormatError as error:
        raise RequestError(f"K2's chat format cannot carry this conversation: {error}") from None
    budget = request.max_tokens if context is None else min(request.max_tokens, context - len(ids))
    if budget < 1:
        raise RequestError(f"the prompt has {len(ids)} tokens; the model's context is {context}")
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(request.seed)
    out = generate(model, ids, 1, budget, request.temperature, stop_ids, generator=generator)[0]
    parsed = parse_assistant(tokenizer.decode(out, skip_special_tokens=False))
    dropped = sum("tool call" in e for e in parsed["errors"])
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in parsed["tool_calls"]]
    message = assistant_message(strip_special_tokens(parsed["content"]), calls)
    return ChatResponse(message=message, usage=Usage(prompt_tokens=len(ids), completion_tokens=len(out))), dropped
