"""Swapping the weights a running backend serves, for RL past one machine: the trainer saves the policy each
iteration and tells the inference server to load it (SGLang's `POST /update_weights_from_disk` shape, which
`k2 serve` answers too), so rollouts come from an existing engine instead of a home-made one.

A reload builds the new model beside the old one (generation goes on meanwhile), then swaps it in under the old
model's lock, so a batch in flight finishes on the weights it started with and every later batch uses the new
ones. The backend id (what response caches key on) becomes the new folder's, so no cached answer of the old
weights is served for the new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from k2core.llm.fingerprint import model_fingerprint


class ReloadUnsupported(Exception):
    """This backend serves weights it cannot replace (a remote endpoint)."""


def reload_backend(backend: Any, path: str | Path) -> str:
    """`backend.reload_weights(path)`, or ReloadUnsupported naming the backend."""
    if not isinstance(backend, ReloadableBackend):
        raise ReloadUnsupported(f"{backend.backend_id} cannot reload weights (only k2 and local backends can)")
    return backend.reload_weights(path)


@runtime_checkable
class ReloadableBackend(Protocol):
    """A backend whose weights can be replaced by those of another model folder while it serves."""

    backend_id: str

    def reload_weights(self, path: str | Path) -> str:
        """Serve the model at `path` from now on; returns the new backend id."""
        ...


class SwapsLoadedModel:
    """`reload_weights` for the local and k2 backends: each holds `loaded` (a model with a `lock`) built from a path
    by `_build(path)`, and names itself `<kind>:<folder>:<fingerprint>:<dtype>`."""

    loaded: Any
    backend_id: str
    _kind: str
    _dtype_name: str
    _build: Callable[[Path], Any]

    def _name(self, path: Path) -> str:
        return f"{self._kind}:{path.name}:{model_fingerprint(path)}:{self._dtype_name}"

    def reload_weights(self, path: str | Path) -> str:
        folder = Path(path).resolve()
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such model folder or file")
        fresh = self._build(folder)  # verifies a k2 checkpoint's manifest; outside the lock: serving goes on
        with self.loaded.lock:
            self.loaded = fresh
            self.backend_id = self._name(folder)
        return self.backend_id
