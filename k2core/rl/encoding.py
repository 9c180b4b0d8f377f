"""Chat conversations to token ids, shared by RL rollouts, the PTX loss and the math benchmark.

Segments from `k2core.chat.render_segments` are tokenized one by one, without added special tokens,
exactly as the SFT stage does (`k2core.train.data.chat_tokens`), so RL prompts and PTX rows are the
token sequences the SFT model was trained on; the per-segment split also gives the loss mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from k2core.chat import EOS, IM_END, render_segments


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end a generated assistant turn: `<|im_end|>` and the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[token] for token in (IM_END, EOS) if token in vocab]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError(
            f"the tokenizer knows neither {IM_END} nor an EOS token; train it with k2core's special tokens"
        )
    return ids


def encode_segments(
    tokenizer: PreTrainedTokenizerBase, segments: list[tuple[str, bool]]
) -> tuple[list[int], list[bool]]:
    """Token ids and a per-token trained-on flag for rendered (text, trained_on) segments."""
    ids: list[int] = []
    mask: list[bool] = []
    for text, trained in segments:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids.extend(piece)
        mask.extend([trained] * len(piece))
    return ids, mask


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """The ids of a conversation followed by the assistant generation prompt."""
    ids, _ = encode_segments(tokenizer, render_segments(messages, tools, add_generation_prompt=True))
    return ids


def math_prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """A math problem as a single user turn, ready for the assistant's answer."""
    return prompt_ids(tokenizer, [{"role": "user", "content": question}])


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for right padding (never attended to, never scored)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    raise ValueError("the tokenizer has neither a pad nor an EOS token; train it with k2core's special tokens")


def pad_masked_rows(rows: Sequence[tuple[list[int], list[bool]]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad (token ids, loss mask) rows into (input ids, attention mask, loss mask) tensors."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, mask) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention_mask[r, : len(ids)] = 1
        loss_mask[r, : len(ids)] = torch.tensor(mask)
    return input_ids, attention_mask, loss_mask
