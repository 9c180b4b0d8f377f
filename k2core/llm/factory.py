"""`make_backend`: the one place a config becomes a backend (heavy imports happen only for the kind used)."""

from __future__ import annotations

from k2core.llm.base import ChatBackend
from k2core.llm.cache import CachedBackend
from k2core.llm.config import K2LLMConfig, LocalLLMConfig, OpenAILLMConfig


def make_backend(cfg: LocalLLMConfig | K2LLMConfig | OpenAILLMConfig) -> ChatBackend:
    """The backend `cfg` describes, behind the response cache when `cfg.cache_dir` is set."""
    backend: ChatBackend
    if isinstance(cfg, LocalLLMConfig):
        from k2core.llm.local import LocalBackend

        backend = LocalBackend(cfg)
    elif isinstance(cfg, K2LLMConfig):
        from k2core.llm.k2_checkpoint import K2Backend

        backend = K2Backend(cfg)
    elif isinstance(cfg, OpenAILLMConfig):
        from k2core.llm.openai_compat import OpenAIBackend

        backend = OpenAIBackend(cfg)
    else:
        raise TypeError(f"not an LLM config: {type(cfg).__name__}")
    return CachedBackend(backend, cfg.cache_dir) if cfg.cache_dir else backend
