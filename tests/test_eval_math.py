"""Held-out math accuracy: greedy generation scored by the RL math reward."""

import pandas as pd
import pytest

import k2core.eval.math as math_eval
from k2core.chat import IM_END
from tests.test_rl_trainer import build_tokenizer, tiny_model

PROBLEMS = pd.DataFrame({"question": ["What is 2 + 3?", "What is 1 + 1?", "What is half of 1?"],
                         "answer": ["5", "2", "\\frac{1}{2}"]})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_accuracy_counts_verified_answers(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    replies = ["So \\boxed{5}" + IM_END, "It is 3" + IM_END, "\\boxed{0.5} and then it goes on"]
    seen: dict = {}

    def fake_generate_batch(model, prompts, max_new_tokens, temperature, eos_token_ids, pad_token_id):
        seen.update(temperature=temperature, n=len(prompts), max_new_tokens=max_new_tokens)
        return [tokenizer.encode(r, add_special_tokens=False) for r in replies]

    monkeypatch.setattr(math_eval, "generate_batch", fake_generate_batch)
    out = math_eval.evaluate_math(None, tokenizer, PROBLEMS, max_new_tokens=9, batch_size=8, timeout_s=20.0)
    assert out["math_accuracy"] == pytest.approx(2 / 3)
    assert out["math_unfinished_rate"] == pytest.approx(1 / 3)
    assert seen == {"temperature": 0.0, "n": 3, "max_new_tokens": 9}


def test_runs_with_a_real_tiny_model(tokenizer) -> None:
    out = math_eval.evaluate_math(tiny_model(len(tokenizer)), tokenizer, PROBLEMS, max_new_tokens=4, batch_size=2,
                                  timeout_s=20.0)
    assert out["math_problems"] == 3 and 0.0 <= out["math_accuracy"] <= 1.0
    assert 0 < out["math_response_len"] <= 4
    with pytest.raises(ValueError, match="'test' split"):
        math_eval.evaluate_math(None, tokenizer, PROBLEMS.head(0), max_new_tokens=4, batch_size=2, timeout_s=1.0)
