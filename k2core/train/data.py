"""Training data as fixed-length token blocks: packed pretraining text and masked SFT chats.

Both loops consume the same `TokenBlocks` (input ids plus labels, -100 = no loss), so pretraining
and SFT share one engine loop. The train/validation split is by document (or example) id hash,
so it does not depend on row order and no document straddles the split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from k2core.chat import render_segments
from k2core.storage import read_parquet

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenBlocks:
    """`input_ids` and `labels`, both [N, seq_len] int64; the model shifts labels internally."""

    input_ids: Tensor
    labels: Tensor
    real: Tensor | None = None  # [N, seq_len] bool, False on padding (right-padded chats); None: no padding

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return self.input_ids[indices], self.labels[indices]

    def token_mask(self, indices: Tensor) -> Tensor | None:
        """Which tokens of the rows `indices` are real, or None when the blocks hold no padding."""
        return None if self.real is None else self.real[indices]


def load_tokenizer(tokenizer_dir: str | Path) -> PreTrainedTokenizerFast:
    """The project tokenizer; it must define an EOS token (appended to every document)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {tokenizer_dir} has no eos_token; rebuild it with the tokenizer stage")
    return tokenizer


def is_validation(key: str, val_fraction: float, seed: int) -> bool:
    """Deterministic hash split: the same key lands in the same split on every run and machine."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def _pack(docs: list[list[int]], eos_id: int, seq_len: int) -> TokenBlocks:
    stream = [token for doc in docs for token in (*doc, eos_id)]
    n_blocks = len(stream) // seq_len
    ids = torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
    return TokenBlocks(ids, ids.clone())


def _require_blocks(blocks: TokenBlocks, split: str, what: str) -> TokenBlocks:
    if len(blocks) == 0:
        raise ValueError(
            f"the {split} split of {what} holds no full sequence; use more data, a shorter seq_len or "
            "(for validation) a larger val_fraction"
        )
    return blocks


def pack_corpus(
    corpus_path: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    val_fraction: float,
    seed: int,
) -> tuple[TokenBlocks, TokenBlocks]:
    """Tokenise column `text`, append EOS per document, pack into seq_len blocks; (train, val)."""
    frame = read_parquet(corpus_path)
    keys = frame["doc_id"].astype(str).tolist() if "doc_id" in frame.columns else frame["text"].tolist()
    encoded = tokenizer(frame["text"].tolist(), add_special_tokens=False)["input_ids"]
    val_mask = [is_validation(key, val_fraction, seed) for key in keys]
    train_docs = [ids for ids, val in zip(encoded, val_mask) if not val]
    val_docs = [ids for ids, val in zip(encoded, val_mask) if val]
    eos = tokenizer.eos_token_id
    return (
        _require_blocks(_pack(train_docs, eos, seq_len), "train", str(corpus_path)),
        _require_blocks(_pack(val_docs, eos, seq_len), "validation", str(corpus_path)),
    )


def chat_tokens(
    messages: list[dict], tools: list[dict], tokenizer: PreTrainedTokenizerFast
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one rendered chat; labels are -100 outside assistant content and tool calls.

    Each rendered segment is tokenised on its own so the mask follows segment boundaries exactly.
    """
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in render_segments(messages, tools or None):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if trained else [IGNORE_INDEX] * len(piece))
    return ids, labels


def _pad_examples(examples: list[tuple[list[int], list[int]]], pad_id: int, seq_len: int) -> TokenBlocks:
    ids = torch.full((len(examples), seq_len), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), seq_len), IGNORE_INDEX, dtype=torch.long)
    real = torch.zeros((len(examples), seq_len), dtype=torch.bool)
    for row, (example_ids, example_labels) in enumerate(examples):
        ids[row, : len(example_ids)] = torch.tensor(example_ids, dtype=torch.long)
        labels[row, : len(example_labels)] = torch.tensor(example_labels, dtype=torch.long)
        real[row, : len(example_ids)] = True
    return TokenBlocks(ids, labels, real)


def sft_blocks(
    sft_path: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    val_fraction: float,
    seed: int,
) -> tuple[TokenBlocks, TokenBlocks, dict[str, int]]:
    """One right-padded, truncated row per chat (no packing, so chats never see each other); (train, val, counts).

    Examples left with no trained token after truncation to seq_len are dropped. `counts` says how many chats there
    were, how many were cut at seq_len, how many of those lost every trained token (dropped), and of the tool-use
    chats (source 'tool') how many were cut and dropped: long trajectories are what a short seq_len loses first.
    """
    frame = read_parquet(sft_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    splits: dict[bool, list[tuple[list[int], list[int]]]] = {False: [], True: []}
    counts = dict.fromkeys(("examples", "truncated", "dropped", "tool_examples", "tool_truncated", "tool_dropped"), 0)
    for example_id, source, messages, tools in zip(frame["example_id"], frame["source"], frame["messages"],
                                                   frame["tools"]):
        ids, labels = chat_tokens(json.loads(messages), json.loads(tools), tokenizer)
        cut = len(ids) > seq_len
        ids, labels = ids[:seq_len], labels[:seq_len]
        dropped = all(label == IGNORE_INDEX for label in labels)
        for prefix in ("", "tool_") if source == "tool" else ("",):
            counts[f"{prefix}examples"] += 1
            counts[f"{prefix}truncated"] += cut
            counts[f"{prefix}dropped"] += dropped
        if not dropped:
            splits[is_validation(str(example_id), val_fraction, seed)].append((ids, labels))
    return (
        _require_blocks(_pad_examples(splits[False], pad_id, seq_len), "train", str(sft_path)),
        _require_blocks(_pad_examples(splits[True], pad_id, seq_len), "validation", str(sft_path)),
        counts,
    )


def batch_indices(n_blocks: int, position: int, batch_size: int, seed: int) -> Tensor:
    """Indices of the `batch_size` blocks starting at global sample `position` of an epoch-wise shuffle.

    A pure function of its arguments, so a resumed run draws exactly the batches it would have drawn.
    """
    offsets = torch.arange(position, position + batch_size)
    epochs, within = offsets // n_blocks, offsets % n_blocks
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        in_epoch = epochs == epoch
        out[in_epoch] = order[within[in_epoch]]
    return out
