"""Live MCP harvesting: start real MCP servers over stdio with the `mcp` SDK client, read `list_tools`, and run
real calls (the time server; the git server on a throwaway repository), so trajectories can use real tools.

`LiveMcpServer` keeps one client session open on a background event loop (an anyio blocking portal), so the
synchronous rollout loop can call tools one at a time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from anyio.from_thread import start_blocking_portal
from pydantic import BaseModel, ConfigDict, Field

from k2core.agentic.mcp_specs import convert_tool
from k2core.agentic.repository import RepoTool, spec_problem

TMP_REPO = "{tmp_repo}"


class McpServerConfig(BaseModel):
    """One stdio server: executable (looked up next to the Python interpreter first, then on PATH) and arguments;
    the argument `{tmp_repo}` becomes a fresh git repository with one commit."""

    model_config = ConfigDict(extra="forbid")
    name: str
    category: str
    command: str
    args: list[str]
    call_timeout_s: float = Field(gt=0)


def resolve_command(command: str) -> str:
    """The server executable: the venv's bin directory first (servers are installed with pip), then PATH."""
    local = Path(sys.executable).parent / command
    found = str(local) if local.is_file() else shutil.which(command)
    if found is None:
        raise FileNotFoundError(f"MCP server command {command!r} not found in {local.parent} or on PATH; pip install it")
    return found


def make_temp_repo(root: Path) -> Path:
    """A git repository with one committed file, the only place the git server may touch."""
    repo = root / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "k2", "GIT_AUTHOR_EMAIL": "k2@example.invalid", "GIT_COMMITTER_NAME": "k2",
           "GIT_COMMITTER_EMAIL": "k2@example.invalid", "PATH": "/usr/bin:/bin"}
    (repo / "README.md").write_text("k2 sandbox\n")
    for cmd in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "initial commit"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env, capture_output=True)
    return repo


class LiveMcpServer(AbstractContextManager["LiveMcpServer"]):
    """A running stdio MCP server with an open session: `tools()` lists, `call()` executes (text result,
    `Error: ...` when the server reports an error)."""

    def __init__(self, cfg: McpServerConfig) -> None:
        self.cfg = cfg
        self._stack = ExitStack()
        self.repo: Path | None = None

    def __enter__(self) -> LiveMcpServer:
        from mcp import Client, StdioServerParameters

        try:
            args = list(self.cfg.args)
            if TMP_REPO in args:
                self.repo = make_temp_repo(Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="k2-mcp-"))))
                args = [str(self.repo) if a == TMP_REPO else a for a in args]
            params = StdioServerParameters(command=resolve_command(self.cfg.command), args=args)
            self._portal = self._stack.enter_context(start_blocking_portal())
            self._client = self._stack.enter_context(self._portal.wrap_async_context_manager(Client(params)))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def tools(self) -> list[RepoTool]:
        """`list_tools` (all pages) as repository entries with provenance `mcp_live`."""
        listed, cursor = [], None
        while True:
            page = self._portal.call(partial(self._client.list_tools, cursor=cursor))
            listed += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        server = {"server_name": self.cfg.name, "server_id": "live", "primary_label": self.cfg.category, "custom_label": self.cfg.name}
        out = []
        for t in listed:
            tool = convert_tool(server, {"name": t.name, "description": t.description, "input_schema": t.input_schema})
            out.append(tool.model_copy(update={"provenance": "mcp_live", "source": f"mcp_live:{self.cfg.name}",
                                               "output_description": "text returned by the live MCP server"}))
        return out

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run the tool for real; the text content of the result."""
        result = self._portal.call(self._client.call_tool, name, arguments, self.cfg.call_timeout_s)
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        return text if not result.is_error or text.startswith("Error") else f"Error: {text}"


def harvest(servers: list[McpServerConfig]) -> tuple[list[RepoTool], dict[str, Any]]:
    """Start each server, list its tools, validate them; returns the valid tools and a per-server report."""
    tools: list[RepoTool] = []
    report: dict[str, Any] = {}
    for cfg in servers:
        with LiveMcpServer(cfg) as server:
            listed = server.tools()
        problems = [spec_problem(t.spec()) for t in listed]
        report[cfg.name] = {"listed": len(listed), "valid": problems.count(None),
                            "rejected_by_reason": dict(Counter(p for p in problems if p is not None))}
        tools += [t for t, p in zip(listed, problems, strict=True) if p is None]
    return tools, report
