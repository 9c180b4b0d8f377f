"""The reward registry and the math reward on real response strings."""

import threading

import pytest

from k2core.rl.rewards import RewardScorer, extract_answer, get_reward, last_boxed, register_reward


@pytest.fixture(scope="module")
def scorer() -> RewardScorer:
    return RewardScorer(timeout_s=20.0)


def test_extraction_prefers_last_boxed_with_nested_braces() -> None:
    text = "First \\boxed{3}, then we fix it: \\boxed{\\frac{1}{2}} done."
    assert last_boxed(text) == "\\frac{1}{2}"
    assert extract_answer(text) == "\\frac{1}{2}"
    assert extract_answer("so 12 apples, or rather 1,300 in total.") == "1300"
    assert extract_answer("the ratio is 3/4") == "3/4"
    assert extract_answer("no digits at all") is None
    assert last_boxed("unbalanced \\boxed{1 + {2}") is None


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("Half of it: \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 0.5", "\\frac{1}{2}", 1.0),
        ("\\boxed{(a+2)(a-2)}", "a^2-4", 1.0),
        ("We get \\boxed{13}", "13", 1.0),
        ("We get \\boxed{13}", "$13$", 1.0),
        ("We get \\boxed{12}", "13", 0.0),
        ("13, not 12", "13", 0.0),
        ("\\boxed{1/3}", "0.5", 0.0),
        ("}}{{\\boxed{\\frac{", "2", 0.0),
        ("asdf qwer", "2", 0.0),
    ],
)
def test_math_reward_on_real_strings(scorer: RewardScorer, response: str, gold: str, score: float) -> None:
    assert scorer("math", response, gold)["score"] == score


def test_math_reward_works_off_the_main_thread(scorer: RewardScorer) -> None:
    results: list[float] = []
    thread = threading.Thread(target=lambda: results.append(scorer("math", "\\boxed{\\frac{2}{4}}", "0.5")["score"]))
    thread.start()
    thread.join()
    assert results == [1.0]
    assert scorer.errors["math"] == 0


def test_timeout_scores_zero_is_counted_and_the_verifier_recovers() -> None:
    strict = RewardScorer(timeout_s=1e-6)
    result = strict("math", "\\boxed{(a+2)(a-2)}", "a^2-4")
    assert result["score"] == 0.0 and "TimeoutError" in result["error"]
    assert strict.errors["math"] == 1
    assert RewardScorer(timeout_s=20.0)("math", "\\boxed{(a+2)(a-2)}", "a^2-4")["score"] == 1.0


def test_exceptions_in_a_reward_score_zero_and_are_counted() -> None:
    @register_reward("test_broken")
    def broken(response: str, ground_truth: str, *, timeout_s: float) -> dict:
        raise RuntimeError("verifier crashed")

    scorer = RewardScorer(timeout_s=1.0)
    assert scorer("test_broken", "x", "y") == {"score": 0.0, "error": "RuntimeError: verifier crashed"}
    assert scorer("exact", " yes ", "yes")["score"] == 1.0
    assert scorer.errors == {"test_broken": 1}
    with pytest.raises(KeyError, match="no reward registered"):
        get_reward("nope")
