"""RL prompts and PTX rows are token-for-token what the SFT stage trained on."""

import json
from pathlib import Path

import pandas as pd
import pytest

from k2core.chat import EOS, IM_END
from k2core.rl.encoding import math_prompt_ids, stop_token_ids
from k2core.rl.ptx import PTXSampler
from k2core.train.data import IGNORE_INDEX, chat_tokens
from tests.test_rl_trainer import build_tokenizer, write_pipeline_inputs


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_math_prompt_is_the_sft_prefix_before_the_answer(tokenizer) -> None:
    question = "What is 2 + 3?"
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": "\\boxed{5}"}]
    ids, labels = chat_tokens(messages, [], tokenizer)
    prompt = math_prompt_ids(tokenizer, question)
    first_trained = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert prompt == ids[:first_trained]
    vocab = tokenizer.get_vocab()
    assert stop_token_ids(tokenizer) == [vocab[IM_END], vocab[EOS]]
    assert ids[-1] == vocab[IM_END]  # SFT trains the turn to end with a stop token


def test_ptx_batches_mask_exactly_the_sft_labels(tmp_path: Path, tokenizer) -> None:
    paths = write_pipeline_inputs(tmp_path)
    sft = pd.read_parquet(paths["sft"])
    sampler = PTXSampler(sft, tokenizer, max_len=512, batch_size=16, seed=0)
    references = {}
    for messages in sft["messages"]:
        ids, labels = chat_tokens(json.loads(messages), [], tokenizer)
        references[tuple(ids)] = [label != IGNORE_INDEX for label in labels]
    input_ids, attention_mask, loss_mask = sampler.sample()
    assert input_ids.shape[0] == 16
    for row in range(16):
        n = int(attention_mask[row].sum())
        key = tuple(input_ids[row, :n].tolist())
        assert key in references
        assert loss_mask[row, :n].tolist() == references[key]
        assert not loss_mask[row, n:].any()


def test_ptx_rejects_rows_cut_before_any_assistant_token(tmp_path: Path, tokenizer) -> None:
    paths = write_pipeline_inputs(tmp_path)
    with pytest.raises(ValueError, match="ptx_max_len"):
        PTXSampler(pd.read_parquet(paths["sft"]), tokenizer, max_len=4, batch_size=2, seed=0)
