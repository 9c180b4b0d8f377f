"""Fidelity of rephrased text: embedding similarity to the original, plus an optional LLM judge.

A rewrite passes when the cosine similarity of its MiniLM embedding to the original chunk's is at
least `min_similarity` and, if a judge backend is given, the judge answers YES to "same facts,
nothing added". The judge is only asked about rewrites that pass the similarity gate (it costs a
model call). Scores are summarised for tracking and drawn as a histogram.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from k2core.data.embeddings import Embedder, paired_similarity
from k2core.llm import ChatBackend, ChatRequest

JudgeVerdict = Literal["pass", "fail", "none"]  # "none": no judge configured, or similarity already failed
_JUDGE_SYSTEM = (
    "You check rewrites for faithfulness. Answer with one word: YES if the rewrite states the same facts, "
    "names, numbers and code as the original and adds no new claims; NO otherwise."
)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    similarity: float
    judge: JudgeVerdict
    passed: bool


def judge_prompt(original: str, rewrite: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {"role": "user", "content": f"Original:\n{original}\n\nRewrite:\n{rewrite}\n\nSame facts, nothing added?"},
    ]


def parse_judgement(text: str | None) -> JudgeVerdict:
    """The judge's first YES/NO word; anything else counts as a failure (an unclear judge keeps nothing)."""
    match = _YES_NO.search(text or "")
    return "pass" if match and match.group(1).lower() == "yes" else "fail"


class FidelityChecker:
    """Scores rewrites against their originals; `judge` is any chat backend, or None to skip judging."""

    def __init__(self, embedder: Embedder, min_similarity: float, judge: ChatBackend | None = None,
                 judge_max_tokens: int = 8) -> None:
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.judge = judge
        self.judge_max_tokens = judge_max_tokens

    def check_many(self, pairs: list[tuple[str, str]], seeds: list[int]) -> list[Verdict]:
        """Verdicts for (original, rewrite) pairs: one embedding batch, then the judge for those above threshold."""
        if not pairs:
            return []
        similarity = paired_similarity(self.embedder, [o for o, _ in pairs], [r for _, r in pairs])
        verdicts = []
        for (original, rewrite), score, seed in zip(pairs, similarity.tolist(), seeds, strict=True):
            if score < self.min_similarity or self.judge is None:
                verdicts.append(Verdict(score, "none", score >= self.min_similarity))
                continue
            request = ChatRequest(messages=judge_prompt(original, rewrite), temperature=0.0, seed=seed,
                                  max_tokens=self.judge_max_tokens)
            judgement = parse_judgement(self.judge.complete(request).message.get("content"))
            verdicts.append(Verdict(score, judgement, judgement == "pass"))
        return verdicts

    def check(self, original: str, rewrite: str, seed: int = 0) -> Verdict:
        return self.check_many([(original, rewrite)], [seed])[0]


def summarize(chunks: pd.DataFrame, prefix: str = "rephrase") -> dict[str, float]:
    """Counts and the similarity distribution of a `rephrased_chunks` table, as flat metrics."""
    stats: dict[str, float] = {
        f"{prefix}_chunks": len(chunks),
        f"{prefix}_docs": int(chunks["doc_id"].nunique()) if len(chunks) else 0,
        f"{prefix}_kept_original": int(chunks["kept_original"].sum()) if len(chunks) else 0,
        f"{prefix}_retried_chunks": int((chunks["attempts"] > 1).sum()) if len(chunks) else 0,
        f"{prefix}_attempts": int(chunks["attempts"].sum()) if len(chunks) else 0,
        # accepted rewrites identical to their original add nothing (rule rewrites of text without cues)
        f"{prefix}_unchanged": int(((chunks["rephrased"] == chunks["original"]) & ~chunks["kept_original"]).sum())
        if len(chunks) else 0,
    }
    if len(chunks):
        similarity = chunks["similarity"].to_numpy(dtype=float)
        stats[f"{prefix}_accept_rate"] = 1.0 - stats[f"{prefix}_kept_original"] / len(chunks)
        stats[f"{prefix}_similarity_mean"] = float(similarity.mean())
        for q in (0.1, 0.5, 0.9):
            stats[f"{prefix}_similarity_p{round(q * 100)}"] = float(np.quantile(similarity, q))
        stats[f"{prefix}_similarity_min"] = float(similarity.min())
        for verdict in ("pass", "fail"):
            stats[f"{prefix}_judge_{verdict}"] = int((chunks["judge"] == verdict).sum())
    return stats


def plot_similarity(chunks: pd.DataFrame, threshold: float) -> bytes:
    """PNG histogram of per-chunk similarity (rephrase kept vs original kept) with the threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = np.linspace(min(0.0, float(chunks["similarity"].min())), 1.0, 41)
    figure, axis = plt.subplots(figsize=(6, 3.4))
    kept = chunks["kept_original"].astype(bool)
    axis.hist([chunks.loc[~kept, "similarity"], chunks.loc[kept, "similarity"]], bins=bins, stacked=True,
              label=["rephrase kept", "original kept"], color=["tab:blue", "tab:orange"])
    axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    axis.set_xlabel("cosine similarity to the original chunk (all-MiniLM-L6-v2)")
    axis.set_ylabel("chunks")
    axis.set_title(f"Rephrase fidelity ({len(chunks)} chunks, best attempt each)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
