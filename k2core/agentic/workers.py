"""Self-sufficient trajectory shards: a worker builds the LLM backends its roles need from plain config.

Backend objects hold models, HTTP clients and locks; they cannot travel to another process or machine. What
travels with a shard is the `AgenticConfig` and the `LLMConfig`s its roles name (pydantic, picklable); the worker
turns them into backends with `k2core.llm.make_backend`, once per process and config, so a worker that runs many
shards loads a model or opens a client once. Each backend's response cache is the sqlite file under the config's
`cache_dir` (relative to the worker's working directory, the repository root), so a rerun asks no model again and
gives the same data whichever worker runs which shard.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from k2core.agentic.generate import AgenticConfig, Shard, ShardResult, run_shard
from k2core.agentic.settings import RolesConfig
from k2core.llm import ChatBackend, K2LLMConfig, LocalLLMConfig, OpenAILLMConfig, make_backend

BackendConfig = LocalLLMConfig | K2LLMConfig | OpenAILLMConfig
PLANNING_ROLES = ("tool_generator",)  # run once in the flow, before the shards
# Every `RolesConfig` field naming a backend, so a role added there travels with the shards without a change here.
ALL_ROLES = tuple(name for name, field in RolesConfig.model_fields.items() if field.annotation == (str | None))
SHARD_ROLES = tuple(r for r in ALL_ROLES if r not in PLANNING_ROLES)

_built: dict[BackendConfig, ChatBackend] = {}
_lock = threading.Lock()


def role_configs(cfg: AgenticConfig, llm: Mapping[str, BackendConfig], roles: Iterable[str] = SHARD_ROLES
                 ) -> dict[str, BackendConfig]:
    """The configs of the named backends that `roles` use (what a shard must carry); an unknown name is an error."""
    names = {getattr(cfg.roles, role) for role in roles} - {None} if cfg.roles else set()
    missing = sorted(names - set(llm))
    if missing:
        raise ValueError(f"roles name backends {missing}, but the llm configs define only {sorted(llm)}")
    wrong = sorted(n for n in names if not isinstance(llm[n], BackendConfig))
    if wrong:
        kind = type(llm[wrong[0]]).__name__
        raise TypeError(f"backends {wrong} must be LLM configs (synth.llm entries), not {kind}: workers build their "
                        "own backends")
    return {name: llm[name] for name in sorted(names)}


def backend(llm: BackendConfig) -> ChatBackend:
    """The backend for `llm`, built on first use in this process and shared by its threads afterwards."""
    with _lock:
        if llm not in _built:
            _built[llm] = make_backend(llm)
        return _built[llm]


def backends_for(cfg: AgenticConfig, llm: Mapping[str, BackendConfig], roles: Iterable[str] = SHARD_ROLES
                 ) -> dict[str, ChatBackend]:
    """The backends `roles` name, built here from their configs (the mapping `run_shard` expects)."""
    return {name: backend(c) for name, c in role_configs(cfg, llm, roles).items()}


def run_shard_here(cfg: AgenticConfig, shard: Shard, llm: Mapping[str, BackendConfig] | None = None) -> ShardResult:
    """`run_shard` with the role backends built in this process from `llm` (the configs the roles name)."""
    return run_shard(cfg, shard, backends_for(cfg, llm or {}))
