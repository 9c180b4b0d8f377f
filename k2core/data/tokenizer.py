"""Train the byte-level BPE tokenizer on the validated corpus and save it as a transformers tokenizer.

K2's chat special tokens are added as special tokens (ids 0..12, in `SPECIAL_TOKENS` order) so that
they are never split and never produced by merges; the K2 chat template (`CHAT_TEMPLATE`) is saved
with it. No BOS/EOS is added on encode: the pretraining packer adds `[BOS]`/`[EOS]` around documents
and chat text ends turns with `<|im_end|>`, as K2 does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from k2core.chat.template import CHAT_TEMPLATE
from k2core.chat.tokens import BOS, EOS, IM_END, PAD, SPECIAL_TOKENS
from k2core.storage import read_parquet

# Word pieces: contractions, letters with one leading space, punctuation runs, whitespace; digits are
# matched one at a time or in groups of up to three (see TokenizerConfig.split_digits).
_WORDS = r"'(?i:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class TokenizerConfig(BaseModel):
    """Size and pre-tokenization of the BPE vocabulary."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(gt=len(SPECIAL_TOKENS) + 256)  # includes the special tokens and 256 bytes
    min_frequency: int = Field(ge=1)  # a pair must occur this often to be merged
    split_digits: bool  # one token per digit (helps small models with arithmetic) or up to three
    max_chars: int = Field(ge=1)  # cap on the corpus text the trainer reads


def build_pre_tokenizer(split_digits: bool) -> pre_tokenizers.PreTokenizer:
    digits = r"\p{N}" if split_digits else r"\p{N}{1,3}"
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(f"{digits}|{_WORDS}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _training_texts(corpus_path: str, max_chars: int) -> list[str]:
    corpus = read_parquet(corpus_path)
    if corpus.empty:
        raise ValueError(f"{corpus_path} has no documents; run the synth and validate stages first")
    texts, total = [], 0
    for text in corpus.sort_values("doc_id")["text"]:
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


def train_tokenizer(corpus_path: str, cfg: TokenizerConfig, out_dir: str) -> dict[str, Any]:
    """Train on the corpus texts and save a `PreTrainedTokenizerFast` folder; returns ids and sizes."""
    from transformers import PreTrainedTokenizerFast

    if "://" in str(out_dir):
        raise ValueError(f"out_dir must be a local folder (save_pretrained writes files), got {out_dir}")
    texts = _training_texts(corpus_path, cfg.max_chars)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = build_pre_tokenizer(cfg.split_digits)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)],
    )
    fast.chat_template = CHAT_TEMPLATE
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    sample = "".join(texts[: min(len(texts), 50)])
    return {
        "vocab_size": len(fast),
        "bos_token_id": fast.bos_token_id,
        "eos_token_id": fast.eos_token_id,
        "pad_token_id": fast.pad_token_id,
        "im_end_token_id": fast.convert_tokens_to_ids(IM_END),
        "train_docs": len(texts),
        "train_chars": sum(map(len, texts)),
        "chars_per_token": len(sample) / max(1, len(tokenizer.encode(sample).ids)),
    }
