"""Errors a backend raises, split by whose fault they are (the server maps them to HTTP status codes)."""

from __future__ import annotations


class RequestError(ValueError):
    """The request cannot be served as asked (messages K2's format cannot carry, prompt longer than the context)."""


class BackendError(RuntimeError):
    """The model behind the backend failed (HTTP error after all retries, malformed server reply)."""
