"""One of this project's checkpoints as a chat backend: K2's chat format in, K2's tool-call parser out."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from k2core.chat import ChatFormatError, parse_assistant
from k2core.llm.base import ChatRequest, ChatResponse, Usage
from k2core.llm.config import K2LLMConfig
from k2core.llm.devices import DTYPES, resolve_device
from k2core.llm.errors import RequestError
from k2core.llm.loglik import continuation_logprobs, document_prefix
from k2core.llm.messages import assistant_message, strip_special_tokens
from k2core.llm.reload import SwapsLoadedModel
from k2core.llm.stops import cut_at_stop, finish_reason
from k2core.model import K2ForCausalLM, generate, generate_batch
from k2core.rl.encoding import pad_token_id, prompt_ids, stop_token_ids


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


class K2Backend(SwapsLoadedModel):
    """Renders the conversation with `k2core.chat`, samples with `k2core.model.generate`, parses the turn back.

    Malformed tool calls are dropped (the assistant message keeps only well-formed ones, renumbered);
    a turn cut off by `max_tokens` is returned as far as it got. `reload_weights` swaps in another checkpoint.
    """

    def __init__(self, cfg: K2LLMConfig) -> None:
        path = Path(cfg.path).resolve()
        device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
        self.loaded = _load(path, device, dtype)
        self._kind, self._dtype_name = "k2", cfg.dtype
        self._build = lambda folder: _Loaded(folder, device, dtype)
        self.backend_id = self._name(path)

    def prepare(self, request: ChatRequest) -> PreparedK2:
        return prepare_k2(self.loaded.tokenizer, self.loaded.context, request)

    def complete_prepared(self, prepared: list[PreparedK2]) -> list[ChatResponse]:
        """Greedy requests in one left-padded batch (one forward pass per token for all), sampled ones one by one
        (each with its own seeded generator, so its answer does not depend on what else was asked)."""
        loaded = self.loaded
        with loaded.lock:
            outs = generate_k2(loaded.model, loaded.tokenizer, loaded.stop_ids, prepared)
        return [reply_k2(loaded.tokenizer, loaded.stop_ids, item, out)[0] for item, out in zip(prepared, outs)]

    def complete(self, request: ChatRequest) -> ChatResponse:
        return self.complete_prepared([self.prepare(request)])[0]

    def loglikelihood(self, prompt: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after the raw-text `prompt`, which starts a document (after EOS, as
        in pretraining), not a chat turn."""
        loaded = self.loaded
        prefix = [document_prefix(loaded.tokenizer)]
        with loaded.lock:
            return continuation_logprobs(loaded.model, loaded.tokenizer, prefix, prompt, continuations, loaded.context)


@dataclass(frozen=True)
class PreparedK2:
    """A request with its prompt tokens and its token budget (max_tokens, cut to what the context leaves)."""

    request: ChatRequest
    ids: list[int]
    budget: int


def prepare_k2(tokenizer: Any, context: int | None, request: ChatRequest) -> PreparedK2:
    """The conversation rendered in K2's chat format; RequestError when the format or the context cannot hold it."""
    try:
        ids = prompt_ids(tokenizer, request.messages, request.tools or None)
    except ChatFormatError as error:
        raise RequestError(f"K2's chat format cannot carry this conversation: {error}") from None
    budget = request.max_tokens if context is None else min(request.max_tokens, context - len(ids))
    if budget < 1:
        raise RequestError(f"the prompt has {len(ids)} tokens; the model's context is {context}")
    return PreparedK2(request, ids, budget)


def generate_k2(model: K2ForCausalLM, tokenizer: Any, stop_ids: list[int], prepared: list[PreparedK2]
                ) -> list[list[int]]:
    """Generated tokens of each prepared request (ending with a stop token when the turn ended)."""
    device = next(model.parameters()).device
    greedy = [i for i, item in enumerate(prepared) if item.request.temperature == 0]
    batched = greedy if len(greedy) > 1 else []
    outs: list[list[int]] = [[] for _ in prepared]
    if batched:
        batch = generate_batch(model, [prepared[i].ids for i in batched], max(prepared[i].budget for i in batched),
                               0.0, stop_ids, pad_token_id=pad_token_id(tokenizer))
        for i, out in zip(batched, batch):
            outs[i] = out[: prepared[i].budget]  # greedy: the same tokens as a run with this row's own budget
    for i, item in enumerate(prepared):
        if i in batched:
            continue
        request = item.request
        generator = torch.Generator(device=device).manual_seed(request.seed)
        outs[i] = generate(model, item.ids, 1, item.budget, request.temperature, stop_ids, top_p=request.top_p,
                           generator=generator)[0]
    return outs


def reply_k2(tokenizer: Any, stop_ids: list[int], item: PreparedK2, out: list[int]) -> tuple[ChatResponse, int]:
    """The generated tokens cut at the first stop string and parsed with K2's tool-call parser. Returns the reply
    and how many tool calls the parser dropped as malformed (the reply keeps only well-formed calls, renumbered)."""
    ended = bool(out) and out[-1] in stop_ids
    body = out[:-1] if ended else out
    body, text, stopped = cut_at_stop(body, lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
                                      item.request.stop)
    parsed = parse_assistant(text)
    dropped = sum("tool call" in e for e in parsed["errors"])
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in parsed["tool_calls"]]
    message = assistant_message(strip_special_tokens(parsed["content"]), calls)
    usage = Usage(prompt_tokens=len(item.ids), completion_tokens=len(body) + (ended and not stopped))
    return ChatResponse(message=message, usage=usage, finish_reason=finish_reason(ended, stopped, bool(calls))), dropped


def complete_k2(model: K2ForCausalLM, tokenizer: Any, stop_ids: list[int], context: int | None, request: ChatRequest
                ) -> tuple[ChatResponse, int]:
    """One assistant turn of a K2 model in memory (see `prepare_k2`, `generate_k2`, `reply_k2`)."""
    item = prepare_k2(tokenizer, context, request)
    return reply_k2(tokenizer, stop_ids, item, generate_k2(model, tokenizer, stop_ids, [item])[0])
