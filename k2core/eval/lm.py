"""Validation loss and bits per byte of a model on held-out text.

Each text is scored as its own document: it is preceded by the tokenizer's EOS token (pretraining
packs documents as `doc EOS doc EOS ...`, so that is the context a document's first token was
trained with; BOS only when there is no EOS) so that every one of its tokens is predicted, and
long texts are cut into windows of `seq_len` predictions that share one token of context at the
seams. Bits per byte = total nats / ln 2 / total UTF-8 bytes of the texts: it does not depend on
the tokenizer, so checkpoints with different vocabularies compare.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from k2core.llm.loglik import document_prefix


def _windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of at most seq_len + 1 tokens; window k's last token is window k+1's first input."""
    return [ids[start:start + seq_len + 1] for start in range(0, len(ids) - 1, seq_len)]


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, batch_size: int
) -> dict[str, float]:
    """`val_loss` (nats per token), `bits_per_byte`, and the token and byte counts they are over."""
    if not texts:
        raise ValueError("no held-out texts to score")
    prefix = document_prefix(tokenizer)
    documents = [[prefix, *tokenizer.encode(text, add_special_tokens=False)] for text in texts]
    windows = [w for ids in documents for w in _windows(ids, seq_len)]
    if not windows:
        raise ValueError("every held-out text is empty; nothing to score")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nats, total_tokens = 0.0, 0
    try:
        for start in tqdm(range(0, len(windows), batch_size), desc="lm eval", unit="batch", leave=False):
            chunk = windows[start:start + batch_size]
            width = max(len(w) for w in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, window in enumerate(chunk):
                ids[row, :len(window)] = torch.tensor(window)
                mask[row, :len(window)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1).to(device),
                                  reduction="none").view(len(chunk), width - 1)
            scored = mask[:, 1:].to(device).bool()
            total_nats += float(nll[scored].sum())
            total_tokens += int(scored.sum())
    finally:
        model.train(was_training)
    total_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return {
        "val_loss": total_nats / total_tokens,
        "bits_per_byte": total_nats / math.log(2) / total_bytes,
        "tokens": float(total_tokens),
        "bytes": float(total_bytes),
    }
