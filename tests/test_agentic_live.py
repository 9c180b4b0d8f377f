"""Live execution of MCP tools inside trajectory generation: the git sandbox, realistic arguments, gold replay on the
real servers, seeded determinism (time results aside), and counted fallback when a server cannot start."""

import json
import random
import re
from collections import Counter

import pytest

from k2core.agentic import generate_tool_data
from k2core.agentic.generate import merge_shards, plan_tool_data, run_shard
from k2core.agentic.harvest import SANDBOX_REPO, LiveSandbox, McpServerConfig
from k2core.agentic.sim_tasks import TIMEZONES, sample_arguments
from tests.test_agentic_simulated import config, mcp_file

TIME = dict(name="time", category="Time & Calendar", command="mcp-server-time", args=["--local-timezone", "UTC"], call_timeout_s=30)
GIT = dict(name="git", category="Development Tools", command="mcp-server-git", args=["--repository", "{tmp_repo}"], call_timeout_s=30)


def live_config(path, servers=(TIME, GIT), **sim):
    base = config(path)
    return config(path, num_tasks=4, repository={**base.repository.model_dump(), "live_servers": list(servers)},
                  simulation={**base.simulation.model_dump(), "num_tasks": 6, "live_tasks": 8, **sim})


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return mcp_file(tmp_path_factory.mktemp("mcp"))


@pytest.fixture(scope="module")
def sandbox():
    with LiveSandbox([McpServerConfig(**TIME), McpServerConfig(**GIT), McpServerConfig(**{**TIME, "name": "gone",
                                                                                          "command": "mcp-server-gone"})]) as box:
        yield box


@pytest.fixture(scope="module")
def runs(path):
    return generate_tool_data(live_config(path), seed=0), generate_tool_data(live_config(path), seed=0)


def git_call(sandbox, tool, **args):
    return sandbox.executors([t for t in sandbox.servers["git"].tools() if t.name == tool])[tool].call(tool, {"repo_path": SANDBOX_REPO, **args})


def test_sandbox_repository_has_real_history_and_resets(sandbox):
    assert set(sandbox.servers) == {"time", "git"} and sandbox.failures["gone"].startswith("FileNotFoundError")
    log = git_call(sandbox, "git_log", max_count=10)
    assert ["greet by name", "document usage", "add the app entry point", "initial commit"] == re.findall(r"Message: (.+)", log)
    assert "CHANGELOG.md" in git_call(sandbox, "git_diff_staged") and "__main__" in git_call(sandbox, "git_diff_unstaged")
    assert "feature/docs" in git_call(sandbox, "git_branch", branch_type="local")
    assert str(sandbox.servers["git"].repo) not in git_call(sandbox, "git_status")
    before = sandbox.fingerprint()
    first = git_call(sandbox, "git_commit", message="release notes")
    assert first.startswith("Changes committed") and sandbox.fingerprint() != before
    sandbox.reset()
    assert sandbox.fingerprint() == before and git_call(sandbox, "git_commit", message="release notes") == first
    assert git_call(sandbox, "git_status").startswith("Repository status")
    sandbox.reset()


def test_live_tools_get_realistic_arguments(sandbox):
    rng = random.Random(0)
    tools = {t.name: t for s in sandbox.servers.values() for t in s.tools()}
    for _ in range(20):
        now = sample_arguments(tools["get_current_time"], rng)
        conv = sample_arguments(tools["convert_time"], rng)
        assert now["timezone"] in TIMEZONES and {conv["source_timezone"], conv["target_timezone"]} <= set(TIMEZONES)
        assert re.fullmatch(r"\d\d:\d\d", conv["time"])
        for name in ("git_log", "git_show", "git_checkout", "git_add"):
            assert sample_arguments(tools[name], rng)["repo_path"] == SANDBOX_REPO


def test_trajectories_run_on_live_servers_and_are_judged(runs):
    (_, sft, stats), _ = runs
    live = stats["simulated"]["live"]
    assert live["agents"] == 2 and live["tasks"] >= 8 and live["generated"] == 2 * live["tasks"]
    assert 0 < live["kept"] < live["generated"] and live["real_calls"] >= live["generated"]
    assert live["simulated_fallback"] == 0 and live["start_failures"] == {}
    assert set(live["pass_rate"]) == {"format", "completed", "checkpoints", "outputs", "honesty", "live_match"}
    sim = stats["simulated"]
    assert sum(sim["first_failure"].values()) == sim["generated"] - sim["kept"]
    tool_text = [m["content"] for r in sft[sft["example_id"].str.contains("-live-")].itertuples()
                 for m in json.loads(r.messages) if m["role"] == "tool"]
    assert any(t.startswith("Commit history:") or t.startswith("Repository status:") or "diff --git" in t for t in tool_text)
    assert any(json.loads(t).get("timezone") in TIMEZONES for t in tool_text if t.startswith("{"))
    assert not any("k2-mcp-" in t for t in tool_text)  # the real temporary path never leaks into the data


def test_same_seed_same_data_except_wall_clock(runs):
    (tasks_a, sft_a, stats_a), (tasks_b, sft_b, stats_b) = runs
    clock = re.compile(r'"datetime": "[^"]+"|\(\d{4}-\d\d-\d\dT[^)]+\)|\\"datetime\\": \\"[^"\\]+\\"')
    assert tasks_a.equals(tasks_b) and list(sft_a["example_id"]) == list(sft_b["example_id"])
    masked = [[clock.sub("<clock>", m) for m in df["messages"]] for df in (sft_a, sft_b)]
    assert masked[0] == masked[1]
    assert stats_a["simulated"]["live"] == stats_b["simulated"]["live"]


def test_server_that_fails_to_start_falls_back_to_simulation(path):
    cfg = live_config(path, servers=(TIME, GIT), live_tasks=4, trajectories_per_task=1)
    plan = plan_tool_data(cfg, seed=0)
    broken = cfg.model_copy(update={"repository": cfg.repository.model_copy(
        update={"live_servers": [McpServerConfig(**TIME), McpServerConfig(**{**GIT, "command": "mcp-server-gone"})]})})
    results = [run_shard(broken, s) for s in plan.shards]
    totals = sum((Counter(r.live["totals"]) for r in results), Counter())
    assert results[0].live["start_failures"]["git"].startswith("FileNotFoundError: MCP server command 'mcp-server-gone'")
    stats = merge_shards(broken, plan, results)[2]["simulated"]["live"]
    assert stats["start_failures"]["git"]["shards"] == 1 and stats["simulated_fallback"] == totals["simulated_fallback"]
    server = {t.name: t.source.removeprefix("mcp_live:") for t in plan.tools if t.provenance == "mcp_live"}
    uses = [{server[c["name"]] for c in t.plan if c["name"] in server} for t in plan.sim_tasks]
    assert totals["simulated_fallback"] == sum(1 for u in uses if "git" in u) > 0
    assert totals["generated"] == sum(1 for u in uses if u == {"time"}) > 0
