"""AgenticConfig and generate_tool_data: the synth stage's tool-use tasks, SFT rows and filter statistics."""

import json
import time

import pytest
from pydantic import ValidationError

from k2core.agentic import AgenticConfig, generate_tool_data
from k2core.chat import normalize_messages

CI = dict(
    envs=["retail", "library"], num_tasks=24, trajectories_per_task=3, min_goals=1, max_goals=3,
    personas=["terse", "chatty", "guarded"], p_transient=0.1, p_edge=0.05, agent_wrong_arg_prob=0.15,
    agent_extra_write_prob=0.1, agent_missing_tool_prob=0.2, max_turns=30, test_fraction=0.25,
)


@pytest.fixture(scope="module")
def data():
    return generate_tool_data(AgenticConfig(**CI), seed=0)


def test_config_is_strict():
    with pytest.raises(ValidationError, match="extra"):
        AgenticConfig(**CI, typo=1)
    with pytest.raises(ValidationError, match="unknown envs"):
        AgenticConfig(**{**CI, "envs": ["airline"]})
    with pytest.raises(ValidationError, match="unknown personas"):
        AgenticConfig(**{**CI, "personas": ["angry"]})
    with pytest.raises(ValidationError, match="min_goals"):
        AgenticConfig(**{**CI, "min_goals": 4})
    with pytest.raises(ValidationError, match="p_transient"):
        AgenticConfig(**{**CI, "p_transient": 0.7, "p_edge": 0.7})


def test_tasks_table(data):
    tasks_df, _, stats = data
    assert list(tasks_df.columns) == ["task_id", "env", "instruction", "gold_actions", "initial_state", "rubric", "split"]
    assert tasks_df["task_id"].is_unique and len(tasks_df) == 24
    assert (tasks_df["split"] == "test").sum() == 6 == stats["test_tasks"]


def test_sft_rows_are_kept_train_trajectories(data):
    tasks_df, sft_df, stats = data
    assert list(sft_df.columns) == ["example_id", "source", "messages", "tools"]
    assert sft_df["example_id"].is_unique and set(sft_df["source"]) == {"tool"}
    assert len(sft_df) == stats["kept"] > 0
    train_ids = set(tasks_df.loc[tasks_df["split"] == "train", "task_id"])
    for row in sft_df.itertuples():
        assert row.example_id.removeprefix("tool-").rsplit("-", 1)[0] in train_ids
        messages, tools = json.loads(row.messages), json.loads(row.tools)
        assert normalize_messages(messages) == messages and messages[-1]["role"] == "assistant"
        assert tools and all(t["type"] == "function" for t in tools)


def test_stats_record_every_filter(data):
    _, _, stats = data
    assert stats["generated"] == 18 * 3 and stats["kept"] < stats["generated"]
    assert set(stats["pass_rate"]) == {"format", "completed", "db_match", "outputs", "rubric"}
    rates = list(stats["cumulative_pass_rate"].values())
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(stats["keep_rate"])
    assert sum(stats["first_failure"].values()) == stats["generated"] - stats["kept"]
    assert stats["tool_call_outcomes"]["transient"] > 0 and stats["tool_call_outcomes"]["edge"] > 0


def test_same_seed_same_data(data):
    again = generate_tool_data(AgenticConfig(**CI), seed=0)
    assert again[0].equals(data[0]) and again[1].equals(data[1]) and again[2] == data[2]
    other = generate_tool_data(AgenticConfig(**{**CI, "num_tasks": 4}), seed=1)
    assert not other[0]["instruction"].isin(data[0]["instruction"]).all()


def test_tiny_profile_is_fast():
    cfg = AgenticConfig(**{**CI, "num_tasks": 100, "trajectories_per_task": 4, "test_fraction": 0.2})
    start = time.perf_counter()
    _, sft_df, stats = generate_tool_data(cfg, seed=3)
    assert stats["generated"] == 320 and len(sft_df) > 150
    assert time.perf_counter() - start < 45
