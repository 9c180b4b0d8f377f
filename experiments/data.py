"""The experiments' data: the project's own offline corpus and a BPE tokenizer trained on it, packed into blocks.

Built here (stage `prepare`) rather than read from the main pipeline's data/validated, so the experiments run
from a fresh checkout with `cd experiments && dvc repro` and do not depend on the main pipeline's profile.
"""

from __future__ import annotations

import json
from pathlib import Path

from k2core.data.corpus import build_text_corpus, deduplicate
from k2core.data.tokenizer import train_tokenizer
from k2core.model import K2Config
from k2core.storage import write_parquet
from k2core.train.data import TokenBlocks, load_tokenizer, pack_corpus

from experiments.config import DataConfig

CORPUS = "corpus.parquet"
TOKENIZER = "tokenizer"


def prepare(cfg: DataConfig, out_dir: Path) -> dict[str, float]:
    """Write `corpus.parquet` and `tokenizer/` under out_dir; returns corpus and tokenizer statistics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus, stats = build_text_corpus(cfg.corpus)
    corpus, duplicates = deduplicate(corpus)
    write_parquet(corpus, out_dir / CORPUS)
    info = train_tokenizer(str(out_dir / CORPUS), cfg.tokenizer, str(out_dir / TOKENIZER))
    summary = {**stats, "docs": len(corpus), "duplicates": duplicates, "chars": int(corpus["text"].str.len().sum()),
               "vocab_size": info["vocab_size"], "chars_per_token": info["chars_per_token"]}
    (out_dir / "stats.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_blocks(data_dir: Path, seq_len: int, cfg: DataConfig) -> tuple[TokenBlocks, TokenBlocks, int]:
    """(train, validation) blocks of seq_len tokens and the tokenizer's vocabulary size."""
    tokenizer = load_tokenizer(data_dir / TOKENIZER)
    train, val = pack_corpus(data_dir / CORPUS, tokenizer, seq_len, cfg.val_fraction, cfg.seed)
    return train, val, len(tokenizer)


def model_config(fields: dict, vocab_size: int) -> K2Config:
    """params.yaml's `model` section with the tokenizer's vocabulary."""
    return K2Config(vocab_size=vocab_size, **fields)
