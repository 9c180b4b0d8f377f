"""Training data and config: packing with EOS, deterministic split, SFT masks, batch order, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from k2core.chat import EOS, PAD, SPECIAL_TOKENS, render_segments
from k2core.train import PretrainConfig, chat_tokens, load_tokenizer, pack_corpus, sft_blocks
from k2core.train.data import IGNORE_INDEX, batch_indices, is_validation

WORDS = "the cat sat on a mat and ran to the red dog who ate some fish while it rained".split()


def corpus_frame(n_docs: int = 60) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(torch.randint(8, 30, (1,), generator=gen)),),
                                                      generator=gen).tolist()) for _ in range(n_docs)]
    return pd.DataFrame({"doc_id": [f"d{i}" for i in range(n_docs)], "source": "test", "kind": "text", "text": texts})


def sft_frame(n: int = 24) -> pd.DataFrame:
    rows = []
    for i in range(n):
        messages = [{"role": "user", "content": f"what did the cat do {i}"},
                    {"role": "assistant", "content": f"the cat sat on the mat {i}"}]
        rows.append({"example_id": f"e{i}", "source": "math", "messages": json.dumps(messages), "tools": "[]"})
    return pd.DataFrame(rows)


def build_tokenizer(directory: Path) -> Path:
    """A small byte-level BPE with the K2 chat special tokens, saved as a transformers folder."""
    texts = corpus_frame()["text"].tolist() + ["".join(text for text, _ in render_segments(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS),
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_packing_appends_eos_and_splits_by_document(tokenizer_dir, tmp_path):
    corpus_frame().to_parquet(tmp_path / "corpus.parquet")
    tokenizer = load_tokenizer(tokenizer_dir)
    train, val = pack_corpus(tmp_path / "corpus.parquet", tokenizer, seq_len=16, val_fraction=0.2, seed=3)
    assert train.input_ids.shape[1] == 16 and torch.equal(train.input_ids, train.labels)
    frame = corpus_frame()
    val_docs = [t for d, t in zip(frame["doc_id"], frame["text"]) if is_validation(d, 0.2, 3)]
    val_stream = [t for text in val_docs for t in (*tokenizer(text, add_special_tokens=False)["input_ids"],
                                                   tokenizer.eos_token_id)]
    assert val.input_ids.flatten().tolist() == val_stream[: val.input_ids.numel()]
    assert (train.input_ids == tokenizer.eos_token_id).sum() > 0
    again, _ = pack_corpus(tmp_path / "corpus.parquet", tokenizer, seq_len=16, val_fraction=0.2, seed=3)
    assert torch.equal(again.input_ids, train.input_ids)


def test_too_little_validation_data_says_what_to_do(tokenizer_dir, tmp_path):
    corpus_frame(3).to_parquet(tmp_path / "corpus.parquet")
    with pytest.raises(ValueError, match="val_fraction"):
        pack_corpus(tmp_path / "corpus.parquet", load_tokenizer(tokenizer_dir), seq_len=64, val_fraction=0.01, seed=0)


def test_sft_labels_cover_exactly_the_assistant_segments(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    messages = json.loads(sft_frame(1)["messages"][0])
    ids, labels = chat_tokens(messages, [], tokenizer)
    trained_text = "".join(text for text, trained in render_segments(messages) if trained)
    kept = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(kept) == trained_text
    sft_frame().to_parquet(tmp_path / "sft.parquet")
    train, val, counts = sft_blocks(tmp_path / "sft.parquet", tokenizer, seq_len=64, val_fraction=0.25, seed=0)
    assert len(train) + len(val) == 24
    assert counts == {"examples": 24, "truncated": 0, "dropped": 0, "tool_examples": 0, "tool_truncated": 0,
                      "tool_dropped": 0}
    pad_rows = train.input_ids == tokenizer.pad_token_id
    assert (train.labels[pad_rows] == IGNORE_INDEX).all()


def test_sft_counts_the_chats_a_short_seq_len_cuts_and_drops(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    frame = sft_frame()
    lengths = [len(chat_tokens(json.loads(m), [], tokenizer)[0]) for m in frame["messages"]]
    prompt = len(chat_tokens(json.loads(frame["messages"][0])[:1], [], tokenizer)[0])  # the user turn alone
    frame.loc[:5, "source"] = "tool"
    frame.loc[:5, "messages"] = [json.dumps([{"role": "user", "content": "word " * 40},
                                             {"role": "assistant", "content": "done"}])] * 6
    frame.to_parquet(tmp_path / "sft.parquet")
    seq_len = max(lengths) - 1  # the longest short chats are cut but keep assistant tokens; the long ones lose all
    assert seq_len > prompt
    train, val, counts = sft_blocks(tmp_path / "sft.parquet", tokenizer, seq_len=seq_len, val_fraction=0.25, seed=0)
    cut = sum(length > seq_len for length in lengths[6:])
    assert counts == {"examples": 24, "truncated": cut + 6, "dropped": 6, "tool_examples": 6, "tool_truncated": 6,
                      "tool_dropped": 6}
    assert len(train) + len(val) == 18


def test_batch_order_is_a_pure_function_of_position():
    first = torch.cat([batch_indices(10, p, 2, seed=1) for p in range(0, 10, 2)])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 14, 4, seed=1), batch_indices(10, 14, 4, seed=1))
    assert not torch.equal(batch_indices(10, 10, 10, seed=1), first)


def _config(**overrides) -> dict:
    base = dict(steps=4, micro_batch_size=2, gradient_accumulation=1, seq_len=16, lr=1e-3, weight_decay=0.1,
                warmup_fraction=0.25, decay_fraction=0.5, final_lr_fraction=0.1, decay_shape="cosine",
                qk_clip_tau=100.0, eval_every=2, eval_batches=1, checkpoint_every=2, zero_stage=0,
                gradient_clipping=1.0, max_consecutive_skipped_steps=3, val_fraction=0.2, seed=0)
    return {**base, **overrides}


def test_config_rejects_zero_3_and_unknown_keys():
    for stage in (0, 1, 2):
        PretrainConfig(**_config(zero_stage=stage))
    with pytest.raises(ValidationError, match="use zero_stage 1 or 2"):
        PretrainConfig(**_config(zero_stage=3))
    with pytest.raises(ValidationError):
        PretrainConfig(**_config(unknown=1))
