"""Tokenizer: trains on the corpus, loads with transformers, never splits K2 special tokens."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from k2core.chat import BOS, EOS, IM_END, PAD, SPECIAL_TOKENS, render, render_segments
from k2core.data.corpus import CorpusConfig, build_text_corpus
from k2core.data.tokenizer import TokenizerConfig, train_tokenizer
from k2core.storage import write_parquet


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tok")
    corpus, _ = build_text_corpus(
        CorpusConfig(sources=["pydoc_topics", "gutenberg"], max_chars_per_source=60_000, doc_chars=2000, min_doc_chars=50)
    )
    write_parquet(corpus, root / "corpus.parquet")
    cfg = TokenizerConfig(vocab_size=600, min_frequency=2, split_digits=True, max_chars=200_000)
    info = train_tokenizer(str(root / "corpus.parquet"), cfg, str(root / "tok"))
    return root / "tok", info


def test_loads_with_special_tokens_set(trained: tuple[Path, dict]) -> None:
    from transformers import PreTrainedTokenizerFast

    path, info = trained
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    assert info["vocab_size"] == len(tok) == 600
    assert info["im_end_token_id"] == tok.convert_tokens_to_ids(IM_END)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert info["chars_per_token"] > 1.5


def test_special_tokens_never_split_and_text_round_trips(trained: tuple[Path, dict]) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(trained[0])
    text = render(
        [{"role": "user", "content": "What is 12+30? <|im_end (not a token)"}, {"role": "assistant", "content": "42"}],
        add_generation_prompt=True,
    )
    ids = tok.encode(text)
    tokens = tok.convert_ids_to_tokens(ids)
    for special in SPECIAL_TOKENS:
        assert tokens.count(special) == text.count(special), special
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(tok.encode("12345")) == ["1", "2", "3", "4", "5"]
    assert all(t not in SPECIAL_TOKENS for t in tok.convert_ids_to_tokens(tok.encode("<|im_end")))


def test_segments_tokenize_like_the_whole_text(trained: tuple[Path, dict]) -> None:
    """SFT masks can be built per segment: segment boundaries sit on special tokens."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(trained[0])
    chat = [{"role": "user", "content": "Sum 3 and 4."}, {"role": "assistant", "content": "3 + 4 = 7. \\boxed{7}"},
            {"role": "user", "content": " again?"}, {"role": "assistant", "content": " Yes: 7"}]
    segments = render_segments(chat)
    pieces = [tok.encode(text) for text, _ in segments]
    assert [i for p in pieces for i in p] == tok.encode(render(chat))


def test_saved_chat_template_equals_render(trained: tuple[Path, dict]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained[0])
    chats = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?\n"}],
    ]
    for chat in chats:
        for gen in (False, True):
            assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen) == render(
                chat, add_generation_prompt=gen)


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    write_parquet(pd.DataFrame(columns=["doc_id", "source", "kind", "text"]), tmp_path / "c.parquet")
    cfg = TokenizerConfig(vocab_size=600, min_frequency=2, split_digits=True, max_chars=1000)
    with pytest.raises(ValueError, match="run the synth and validate stages"):
        train_tokenizer(str(tmp_path / "c.parquet"), cfg, str(tmp_path / "tok"))
