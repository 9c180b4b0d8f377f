"""Chat-completion backends behind one interface, chosen per role in params.yaml (`make_backend(cfg)`)."""

from k2core.llm.base import ChatBackend, ChatRequest, ChatResponse, Usage
from k2core.llm.cache import CachedBackend, ResponseCache
from k2core.llm.config import K2LLMConfig, LLMConfig, LocalLLMConfig, OpenAILLMConfig, parse_llm_config
from k2core.llm.errors import BackendError, RequestError
from k2core.llm.factory import make_backend

__all__ = [
    "BackendError",
    "CachedBackend",
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "K2LLMConfig",
    "LLMConfig",
    "LocalLLMConfig",
    "OpenAILLMConfig",
    "RequestError",
    "ResponseCache",
    "Usage",
    "make_backend",
    "parse_llm_config",
]
