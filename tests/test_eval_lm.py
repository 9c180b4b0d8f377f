"""Validation loss and bits per byte: exact on a uniform model, windowing scores every token once."""

import math

import pytest
import torch

from k2core.eval.lm import evaluate_lm
from tests.test_rl_trainer import TEXTS, build_tokenizer, tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_uniform_model_gives_log_vocab_nats_and_matching_bits_per_byte(tokenizer) -> None:
    model = tiny_model(len(tokenizer))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    texts = TEXTS + ["héllo wörld ✓"]
    out = evaluate_lm(model, tokenizer, texts, seq_len=16, batch_size=3)
    n_tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert out["tokens"] == n_tokens and out["bytes"] == n_bytes
    assert out["val_loss"] == pytest.approx(math.log(len(tokenizer)), rel=1e-5)
    assert out["bits_per_byte"] == pytest.approx(n_tokens * math.log(len(tokenizer)) / math.log(2) / n_bytes, rel=1e-5)


def test_window_size_and_batching_do_not_change_what_is_scored(tokenizer) -> None:
    model = tiny_model(len(tokenizer))
    long_window = evaluate_lm(model, tokenizer, TEXTS, seq_len=256, batch_size=1)
    short_window = evaluate_lm(model, tokenizer, TEXTS, seq_len=7, batch_size=5)
    assert long_window["tokens"] == short_window["tokens"]
    # A random model barely uses context: the losses agree closely but were computed differently.
    assert short_window["val_loss"] == pytest.approx(long_window["val_loss"], rel=1e-2)
    one_by_one = [evaluate_lm(model, tokenizer, [t], seq_len=256, batch_size=1) for t in TEXTS]
    nats = sum(r["val_loss"] * r["tokens"] for r in one_by_one)
    assert long_window["val_loss"] * long_window["tokens"] == pytest.approx(nats, rel=1e-5)
    assert model.training  # restored after evaluation


def test_no_texts_is_an_error(tokenizer) -> None:
    with pytest.raises(ValueError, match="no held-out texts"):
        evaluate_lm(tiny_model(len(tokenizer)), tokenizer, [], seq_len=8, batch_size=1)
