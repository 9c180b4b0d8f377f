"""Live MCP harvesting: start real MCP servers over stdio with the `mcp` SDK client, read `list_tools`, and run
real calls (the time server; the git server on a throwaway repository), so trajectories can use real tools.

`LiveMcpServer` keeps one client session open on a background event loop (an anyio blocking portal), so the
synchronous rollout loop can call tools one at a time.
"""

from __future__ import annotations

import hashlib
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
SANDBOX_REPO = "/sandbox/repo"  # the repository path agents see; `SandboxExecutor` maps it to the real temporary one
# fixed identity and clock for every commit (seeded ones and the server's), so commit hashes are reproducible
GIT_ENV = {"GIT_AUTHOR_NAME": "k2", "GIT_AUTHOR_EMAIL": "k2@example.invalid", "GIT_COMMITTER_NAME": "k2",
           "GIT_COMMITTER_EMAIL": "k2@example.invalid", "GIT_AUTHOR_DATE": "1773489600 +0000",
           "GIT_COMMITTER_DATE": "1773489600 +0000"}  # 2026-03-14 12:00 UTC, in a form git and GitPython both read
# (message, files written, commit date) after the initial commit; then a side branch with one more commit, a staged,
# a modified and an untracked file, so status, diffs, log, show, branch, add and commit all return real content
HISTORY = [
    ("add the app entry point", {"src/app.py": "def main() -> None:\n    print('hello')\n"}, "2026-03-10T09:00:00+00:00"),
    ("document usage", {"README.md": "k2 sandbox\n\nRun `python src/app.py`.\n"}, "2026-03-11T14:30:00+00:00"),
    ("greet by name", {"src/app.py": "def main(name: str = 'world') -> None:\n    print(f'hello {name}')\n"}, "2026-03-12T16:45:00+00:00"),
]


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


def _git(repo: Path, *cmd: str, date: str | None = None) -> str:
    env = {**GIT_ENV, "PATH": "/usr/bin:/bin"} | ({"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {})
    return subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env, capture_output=True, text=True).stdout


def make_temp_repo(root: Path, populated: bool = False) -> Path:
    """A git repository with one committed file, the only place the git server may touch; `populated` adds the
    commits, side branch and working-tree changes of `HISTORY` (same content and hashes every time)."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("k2 sandbox\n")
    _git(repo, "init", "-q", "--template=", "-b", "main")  # no sample hooks: fewer files to copy on every reset
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "initial commit", date="2026-03-09T08:00:00+00:00")
    if populated:
        for message, files, date in HISTORY:
            for name, text in files.items():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                (repo / name).write_text(text)
            _git(repo, "add", *files)
            _git(repo, "commit", "-q", "-m", message, date=date)
        _git(repo, "checkout", "-q", "-b", "feature/docs")
        (repo / "docs").mkdir()
        (repo / "docs/guide.md").write_text("# Guide\n\nCall `main(name)` to greet someone.\n")
        _git(repo, "add", "docs/guide.md")
        _git(repo, "commit", "-q", "-m", "add a usage guide", date="2026-03-13T10:15:00+00:00")
        _git(repo, "checkout", "-q", "main")
        (repo / "CHANGELOG.md").write_text("## 0.2\n- greet by name\n")
        _git(repo, "add", "CHANGELOG.md")
        (repo / "src/app.py").write_text((repo / "src/app.py").read_text() + "\n\nif __name__ == '__main__':\n    main()\n")
        (repo / "notes.txt").write_text("todo: add tests\n")
        _git(repo, "repack", "-adq")  # one pack instead of a directory per loose object
        _git(repo, "prune-packed", "-q")
    return repo


def repo_fingerprint(repo: Path) -> str:
    """A hash of everything a git tool can change: refs and their commits, HEAD, and each changed path with its
    HEAD and index blob ids (the git tools change working-tree files only by checkout, which moves HEAD)."""
    state = _git(repo, "for-each-ref", "--format=%(refname) %(objectname)") + _git(repo, "status", "--porcelain=v2", "--branch", "-uall")
    return hashlib.sha256(state.encode()).hexdigest()


class LiveMcpServer(AbstractContextManager["LiveMcpServer"]):
    """A running stdio MCP server with an open session: `tools()` lists, `call()` executes (text result,
    `Error: ...` when the server reports an error)."""

    def __init__(self, cfg: McpServerConfig, populate_repo: bool = False) -> None:
        self.cfg, self.populate_repo = cfg, populate_repo
        self._stack = ExitStack()
        self.repo: Path | None = None

    def __enter__(self) -> LiveMcpServer:
        from mcp import Client, StdioServerParameters

        try:
            args = list(self.cfg.args)
            if TMP_REPO in args:
                self.repo = make_temp_repo(Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="k2-mcp-"))),
                                           self.populate_repo)
                args = [str(self.repo) if a == TMP_REPO else a for a in args]
            params = StdioServerParameters(command=resolve_command(self.cfg.command), args=args, env=GIT_ENV)
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
        try:
            with LiveMcpServer(cfg) as server:
                listed = server.tools()
        except Exception as exc:  # noqa: BLE001 - a server that cannot start contributes no tools, with the reason
            report[cfg.name] = {"listed": 0, "valid": 0, "rejected_by_reason": {}, "start_failure": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        problems = [spec_problem(t.spec()) for t in listed]
        report[cfg.name] = {"listed": len(listed), "valid": problems.count(None),
                            "rejected_by_reason": dict(Counter(p for p in problems if p is not None))}
        tools += [t for t, p in zip(listed, problems, strict=True) if p is None]
    return tools, report


class SandboxExecutor:
    """Runs one repository tool on its live server: the repository name may carry a rename prefix (`unique_names`),
    and the sandbox path agents see is swapped for the real temporary repository both ways."""

    def __init__(self, server: LiveMcpServer, tool_name: str, server_tools: list[str]) -> None:
        self.server = server
        self.remote = max((n for n in server_tools if tool_name == n or tool_name.endswith(f"_{n}")), key=len)
        self.real = str(server.repo) if server.repo else None

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        if self.real is None:
            return self.server.call(self.remote, arguments)
        args = {k: self.real if v == SANDBOX_REPO else v for k, v in arguments.items()}
        return self.server.call(self.remote, args).replace(self.real, SANDBOX_REPO)


class LiveSandbox(AbstractContextManager["LiveSandbox"]):
    """The live servers of one shard, started once: git ones on a populated temporary repository that `reset`
    restores from a pristine copy (so every replay starts from the same state). A server that fails to start is
    recorded in `failures` (name -> reason) and its tools stay simulated."""

    def __init__(self, servers: list[McpServerConfig]) -> None:
        self.configs = servers
        self.servers: dict[str, LiveMcpServer] = {}
        self.remote_tools: dict[str, list[str]] = {}
        self.failures: dict[str, str] = {}
        self._pristine: dict[str, Path] = {}
        self._stack = ExitStack()

    def __enter__(self) -> LiveSandbox:
        for cfg in self.configs:
            try:
                server = self._stack.enter_context(LiveMcpServer(cfg, populate_repo=True))
                self.remote_tools[cfg.name] = [t.name for t in server.tools()]
            except Exception as exc:  # noqa: BLE001 - any start failure means: simulate this server, say why
                self.failures[cfg.name] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            self.servers[cfg.name] = server
            if server.repo is not None:
                keep = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="k2-pristine-"))) / "repo"
                shutil.copytree(server.repo, keep, symlinks=True)
                self._pristine[cfg.name] = keep
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def executors(self, tools: list[RepoTool]) -> dict[str, SandboxExecutor]:
        """Executors for the tools (by repository name) whose server is running."""
        out = {}
        for tool in tools:
            server = tool.source.removeprefix("mcp_live:") if tool.provenance == "mcp_live" else None
            if server in self.servers:
                out[tool.name] = SandboxExecutor(self.servers[server], tool.name, self.remote_tools[server])
        return out

    def reset(self) -> None:
        """Every temporary repository back to its populated state."""
        for name, keep in self._pristine.items():
            repo = self.servers[name].repo
            assert repo is not None
            shutil.rmtree(repo)
            shutil.copytree(keep, repo, symlinks=True)

    def fingerprint(self) -> str:
        """The combined state of the temporary repositories (empty without git servers)."""
        return "".join(repo_fingerprint(s.repo) for s in self.servers.values() if s.repo is not None)
