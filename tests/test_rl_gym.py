"""The gym's interface, answer extraction, math (math-verify) and reasoning-gym domains, and the difficulty filter,
on real responses."""

from __future__ import annotations

import json

import pytest

from k2core.rl.gym import (
    Env, GymError, MathDomain, GymConfig, SingleTurnEnv, domains, filter_moderate, get_domain, make_env, rate,
    register_domain, score,
)
from k2core.rl.gym.extract import extract_final_answer, strip_reasoning

RG = ["rg/countdown", "rg/puzzle24", "rg/sudoku", "rg/knights_knaves", "rg/basic_arithmetic", "rg/codeio"]


def test_registry_names_every_domain_and_refuses_duplicates_and_unknowns() -> None:
    assert set(domains()) == {"math", "code", "ifeval", "faithfulness", *RG}
    with pytest.raises(GymError, match="already registered"):
        register_domain(MathDomain(GymConfig()))
    with pytest.raises(GymError, match="no gym domain 'chess'; registered: "):
        score("chess", {}, "e4")
    with pytest.raises(GymError, match="math: sample lacks field\\(s\\) \\['answer'\\]"):
        score("math", {"prompt": "1+1?"}, "\\boxed{2}")


def test_extraction_prefers_tags_then_boxed_then_final_answer_and_refuses_hedges() -> None:
    assert extract_final_answer("<think>maybe <answer>4</answer></think> so <answer> 5 </answer>") == "5"
    assert extract_final_answer("we get \\boxed{\\frac{1}{2}} hence") == "\\frac{1}{2}"
    assert extract_final_answer("Work...\nFinal answer: **42**.") == "42"
    assert extract_final_answer("<answer>3</answer> or <answer>4</answer>") is None
    assert extract_final_answer("\\boxed{3} \\boxed{3}") == "3"
    assert extract_final_answer("no marker here") is None
    assert extract_final_answer("  6 7\n8 9 ", fallback_whole=True) == "6 7\n8 9"
    assert strip_reasoning("all of this is reasoning</think>answer") == "answer"


def test_math_domain_uses_math_verify_on_the_final_answer() -> None:
    sample = {"prompt": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"}
    assert score("math", sample, "Adding, we get \\boxed{0.75}.") == (1.0, {"extracted": "0.75"})
    assert score("math", sample, "<answer>3/4</answer>")[0] == 1.0
    assert score("math", sample, "<answer>\\frac{2}{3}</answer>")[0] == 0.0
    assert score("math", sample, "<think>\\boxed{3/4}</think>I am not sure.")[0] == 0.0
    assert score("math", sample, "<answer>3/4</answer><answer>2/3</answer>")[1]["reason"] == "no single final answer"
    env = make_env("math", samples=[sample])
    assert env.reset(7) == [{"role": "user", "content": "What is 1/2 + 1/4?"}]
    assert tuple(env.step({"role": "assistant", "content": "\\boxed{3/4}"}))[1:3] == (1.0, True)
    with pytest.raises(GymError, match="call reset"):
        env.step({"role": "assistant", "content": "\\boxed{3/4}"})
    with pytest.raises(GymError, match="has no generator: pass `samples`"):
        make_env("math")


@pytest.mark.parametrize("name", RG)
def test_reasoning_gym_domains_pay_the_reference_answer_only(name: str) -> None:
    env = make_env(name)
    assert isinstance(env, Env) and isinstance(env, SingleTurnEnv)
    prompt = env.reset(11)
    sample = get_domain(name).generate(11)
    assert prompt[0]["content"] == sample["prompt"] and "<answer></answer>" in sample["prompt"]
    stored = json.loads(json.dumps(sample))  # samples travel as JSON
    right = f"<think>let me see</think>The solution:\n<answer>{sample['answer']}</answer>"
    assert score(name, stored, right)[0] == 1.0
    assert score(name, stored, "<answer>I do not know</answer>")[0] < 0.1
    assert env.step({"role": "assistant", "content": right}).reward == 1.0


def test_the_24_game_accepts_any_correct_expression_and_sudoku_a_bare_grid() -> None:
    sample = get_domain("rg/puzzle24").generate(0)
    a, b, c, d = sample["metadata"]["numbers"]
    # not the reference expression: the verifier evaluates whatever the response gives
    candidates = [f"({a}+{b}+{c})*{d}", f"{a}*{b}-{c}*{d}", f"{a}*{b}+{c}-{d}", f"({a}-{b}+{c})*{d}"]
    assert score("rg/puzzle24", sample, f"<answer>{sample['answer']}</answer>")[0] == 1.0
    wrong = [e for e in candidates if abs(eval(e) - 24) > 1e-9]  # noqa: S307 - our own arithmetic strings
    assert wrong and all(score("rg/puzzle24", sample, f"<answer>{e}</answer>")[0] < 1.0 for e in wrong)
    sudoku = get_domain("rg/sudoku").generate(3)
    assert score("rg/sudoku", sudoku, sudoku["answer"])[0] == 1.0  # no tags: the whole response is the answer
    broken = sudoku["answer"].replace("1", "2", 1)
    assert score("rg/sudoku", sudoku, f"<answer>{broken}</answer>")[0] < 1.0


def fake_sampler(correct_per_prompt: dict[str, int]):
    """K responses per prompt, the first `correct` of them right (keyed by the prompt text)."""
    def sample(messages: list[dict], k: int) -> list[str]:
        text = messages[-1]["content"]
        right, answer = correct_per_prompt[text], text.split("=")[-1]
        return [f"\\boxed{{{answer}}}"] * right + ["\\boxed{-1}"] * (k - right)
    return sample


def test_difficulty_filter_keeps_prompts_of_moderate_pass_rate() -> None:
    samples = [{"prompt": f"q{i}={i}", "answer": str(i)} for i in range(5)]
    sampler = fake_sampler({s["prompt"]: c for s, c in zip(samples, [0, 1, 4, 8, 8], strict=True)})
    domain = get_domain("math")
    rated = rate(domain, samples, sampler, k=8)
    assert [r.pass_rate for r in rated] == [0.0, 0.125, 0.5, 1.0, 1.0]
    assert rated[1].rewards == (1.0,) + (0.0,) * 7
    assert filter_moderate(domain, samples, sampler, k=8) == samples[1:3]
    assert filter_moderate(domain, samples, sampler, k=8, low=0.25, high=0.75) == samples[2:3]
    assert filter_moderate(domain, samples, sampler, k=8, low=0.5, high=1.0, inclusive=True) == samples[2:]
    with pytest.raises(GymError, match="returned 8 responses, asked for 4"):
        rate(domain, samples, lambda m, k: ["x"] * 8, k=4)
    with pytest.raises(GymError, match="need 0 <= low <= high <= 1"):
        filter_moderate(domain, samples, sampler, k=8, low=0.9, high=0.1)
