"""Builds the tool repository: real MCP specs (sampled), live-harvested tools, environment tools and synthetic
tools evolved from the MCP categories; unique names; near-duplicates removed, real tools winning over synthetic."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from k2core.agentic.dedup import keep_mask, vectors
from k2core.agentic.evolve import Evolver, LLMEvolver, TemplateEvolver, evolve_tools
from k2core.agentic.harvest import harvest
from k2core.agentic.llm_roles import JsonAsker
from k2core.agentic.mcp_specs import load_mcp_tools
from k2core.agentic.repository import RepoTool, env_tools, unique_names
from k2core.agentic.settings import RepositoryConfig


TEXT_WORDS = 48


def tool_text(tool: RepoTool) -> str:
    """What similarity is measured on: name, the description's first words (long MCP descriptions would dominate
    the embedding cost and add little) and parameter names."""
    words = " ".join(tool.description.split()[:TEXT_WORDS])
    return f"{tool.name.replace('_', ' ')}. {words} Parameters: {' '.join(tool.parameters.get('properties', {}))}"


def build_repository(cfg: RepositoryConfig, seed: int, generator: JsonAsker | None = None) -> tuple[list[RepoTool], dict[str, Any]]:
    """The deduplicated repository and a report (counts by provenance and stage, rejections, dedup method)."""
    mcp = load_mcp_tools(cfg.mcp_path)
    rng = random.Random(seed)
    real = rng.sample(mcp.tools, min(cfg.max_mcp_tools, len(mcp.tools)))
    live, live_report = harvest(cfg.live_servers) if cfg.live_servers else ([], {})
    evolver: Evolver = LLMEvolver(generator) if generator else TemplateEvolver(mcp.tools, seed)
    categories = cfg.categories or sorted({t.category for t in mcp.tools})
    synthetic, evolved = evolve_tools(evolver, categories, cfg.domains_per_category, cfg.tools_per_domain)
    envs = env_tools() if cfg.include_env_tools else []
    candidates = unique_names(real + live + envs + synthetic)
    vecs, method = vectors([tool_text(t) for t in candidates], cfg.dedup_method)
    mask = keep_mask(vecs, cfg.dedup_threshold)
    # Executable tools (project envs, live MCP servers) stay: agents rely on them and they are not near-copies
    # of each other.
    kept = [t for t, keep in zip(candidates, mask, strict=True) if keep or t.provenance in ("env", "mcp_live")]
    report = {
        "mcp": mcp.report(),
        "live": live_report,
        "evolved": {"categories": evolved.categories, "domains": evolved.domains, "tools": evolved.tools,
                    "rejected": dict(evolved.rejected), "generator": "llm" if generator else "template"},
        "candidates": dict(Counter(t.provenance for t in candidates)),
        "kept": dict(Counter(t.provenance for t in kept)),
        "near_duplicates_removed": len(candidates) - len(kept),
        "dedup_method": method,
        "tools": len(kept),
    }
    if generator:
        report["evolved"].update(llm_calls=generator.calls, llm_failures=generator.failures)
    return kept, report
