"""Live MCP harvesting against real stdio servers (mcp-server-time, mcp-server-git on a throwaway repository)."""

import json

import pytest

from k2core.agentic.harvest import LiveMcpServer, McpServerConfig, harvest, resolve_command
from k2core.agentic.simulator import ModeInjector, RuleEngine, SimWorld

TIME = McpServerConfig(name="time", category="Time & Calendar", command="mcp-server-time", args=["--local-timezone", "UTC"],
                      call_timeout_s=30)
GIT = McpServerConfig(name="git", category="Development Tools", command="mcp-server-git", args=["--repository", "{tmp_repo}"],
                     call_timeout_s=30)


@pytest.fixture(scope="session")
def time_server():
    with LiveMcpServer(TIME) as server:
        yield server


@pytest.fixture(scope="session")
def git_server():
    with LiveMcpServer(GIT) as server:
        yield server


def test_list_tools_from_real_servers(time_server, git_server):
    names = {t.name for t in time_server.tools()}
    assert names == {"get_current_time", "convert_time"}
    git = {t.name: t for t in git_server.tools()}
    assert {"git_status", "git_log", "git_commit"} <= set(git)
    assert all(t.provenance == "mcp_live" and t.source == "mcp_live:git" for t in git.values())


def test_real_calls(time_server, git_server):
    now = json.loads(time_server.call("get_current_time", {"timezone": "UTC"}))
    assert now["timezone"] == "UTC" and now["datetime"].endswith("+00:00")
    converted = json.loads(time_server.call("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}))
    assert converted["target"]["datetime"][11:16] == "21:00"
    assert time_server.call("get_current_time", {"timezone": "Nowhere/Else"}).startswith("Error")
    assert "initial commit" in git_server.call("git_log", {"repo_path": str(git_server.repo), "max_count": 1})
    (git_server.repo / "notes.txt").write_text("hello\n")
    assert "notes.txt" in git_server.call("git_status", {"repo_path": str(git_server.repo)})
    # safety: the git server refuses any repository but the throwaway one
    assert "outside the allowed repository" in git_server.call("git_status", {"repo_path": str(git_server.repo.parent)})


def test_simulated_world_routes_live_tools_to_the_server(time_server):
    tools = time_server.tools()
    world = SimWorld(tools, RuleEngine(), ModeInjector(0.0, 0.0, 0.0, 0), live={"get_current_time": time_server})
    result = world.step({"name": "get_current_time", "arguments": json.dumps({"timezone": "Europe/Paris"})})
    assert json.loads(result)["timezone"] == "Europe/Paris" and world.log[-1].applied


def test_harvest_reports_and_validates():
    tools, report = harvest([TIME])
    assert report == {"time": {"listed": 2, "valid": 2, "rejected_by_reason": {}}} and len(tools) == 2


def test_unknown_command_is_explained():
    with pytest.raises(FileNotFoundError, match="pip install"):
        resolve_command("mcp-server-that-does-not-exist")
