"""Token budget (truncate + replace the reward) and the temperature decay."""

import pytest
from pydantic import ValidationError

from k2core.rl.budget import budget_for, budgeted_reward, enforce_budget
from k2core.rl.temperature import TemperatureSchedule, temperature_at

EOS = {9}


def test_finished_responses_are_kept_whole() -> None:
    assert enforce_budget([1, 2, 9], budget=4, eos_token_ids=EOS) == ([1, 2, 9], False)
    assert enforce_budget([1, 2, 3, 9], budget=4, eos_token_ids=EOS) == ([1, 2, 3, 9], False)
    assert enforce_budget([1, 9, 5, 5, 5], budget=4, eos_token_ids=EOS) == ([1, 9], False)
    assert enforce_budget([1, 2], budget=4, eos_token_ids=EOS) == ([1, 2], False)  # generator dropped the EOS


def test_over_budget_responses_are_cut_and_penalised() -> None:
    assert enforce_budget([1, 2, 3, 4], budget=4, eos_token_ids=EOS) == ([1, 2, 3, 4], True)
    assert enforce_budget([1, 2, 3, 4, 9], budget=4, eos_token_ids=EOS) == ([1, 2, 3, 4], True)
    assert budgeted_reward(1.0, truncated=True, penalty=-0.5) == -0.5
    assert budgeted_reward(1.0, truncated=False, penalty=-0.5) == 1.0
    assert budget_for("math", {"math": 64}) == 64
    with pytest.raises(KeyError, match="rl.token_budgets"):
        budget_for("code", {"math": 64})


@pytest.mark.parametrize("shape", ["linear", "cosine", "exponential"])
def test_temperature_decays_from_start_to_end(shape: str) -> None:
    schedule = TemperatureSchedule(start=1.2, end=0.6, shape=shape)
    temps = [temperature_at(schedule, step, 7) for step in range(7)]
    assert temps[0] == pytest.approx(1.2) and temps[-1] == pytest.approx(0.6)
    assert all(a > b for a, b in zip(temps, temps[1:]))
    with pytest.raises(ValueError, match="outside"):
        temperature_at(schedule, 7, 7)


def test_temperature_must_not_increase() -> None:
    with pytest.raises(ValidationError, match="must decay"):
        TemperatureSchedule(start=0.5, end=1.0, shape="linear")
    with pytest.raises(ValidationError, match="extra"):
        TemperatureSchedule(start=1.0, end=0.5, shape="linear", warmup=3)
