"""The PTX batches of K2's RL: curated SFT conversations scored with an assistant-only NLL.

K2 (§3.2) adds "an auxiliary PTX loss" on hand-selected high-quality samples to RL against
forgetting; we read it as InstructGPT's PTX term, beta * NLL of the assistant tokens.
"""

from __future__ import annotations

import json
import random

import pandas as pd
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from k2core.chat import render_segments
from k2core.rl.encoding import encode_segments, pad_masked_rows, pad_token_id


class PTXSampler:
    """Random fixed-size batches of tokenized SFT rows (`messages`, `tools` JSON columns)."""

    def __init__(
        self, sft: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_len: int, batch_size: int, seed: int
    ) -> None:
        self.batch_size = batch_size
        self.pad_id = pad_token_id(tokenizer)
        self._rng = random.Random(seed)
        self._rows: list[tuple[list[int], list[bool]]] = []
        for messages, tools in zip(sft["messages"], sft["tools"], strict=True):
            ids, mask = encode_segments(tokenizer, render_segments(json.loads(messages), json.loads(tools) or None))
            ids, mask = ids[:max_len], mask[:max_len]
            if any(mask[1:]):
                self._rows.append((ids, mask))
        if not self._rows:
            raise ValueError(
                f"no SFT row keeps an assistant token within ptx_max_len={max_len}; raise it or check sft.parquet"
            )

    def get_state(self) -> tuple:
        """The sampler's random state, for RL's resume state."""
        return self._rng.getstate()

    def set_state(self, state: tuple) -> None:
        """Continue drawing exactly where the sampler whose `get_state()` this is stopped."""
        self._rng.setstate(state)

    def sample(self) -> tuple[Tensor, Tensor, Tensor]:
        """(input_ids, attention_mask, loss_mask), right-padded to the batch's longest row."""
        rows = [self._rows[self._rng.randrange(len(self._rows))] for _ in range(self.batch_size)]
        return pad_masked_rows(rows, self.pad_id)
