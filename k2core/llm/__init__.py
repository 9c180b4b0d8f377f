"""Chat-completion backends behind one interface, chosen per role in params.yaml."""

from k2core.llm.base import ChatBackend, ChatRequest, ChatResponse, Usage

__all__ = ["ChatBackend", "ChatRequest", "ChatResponse", "Usage"]
