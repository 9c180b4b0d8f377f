"""Agent diversification over the tool repository (K2 §3.1.1): many agents, each a synthesized system prompt paired
with its own combination of tools: mostly from one application domain, a few from elsewhere in its category, and
sometimes an unrelated tool, mixing real MCP, live, synthetic and environment tools."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from k2core.agentic.repository import RepoTool

ROLES = [
    "You are an assistant for {domain} ({category}).",
    "You are the {domain} operator bot; users ask you to look things up and make changes.",
    "As a {category} specialist working inside {domain}, you help users with their requests.",
    "You are a careful automation agent with access to {domain} tools.",
]
STYLES = ["Answer briefly.", "Explain each step you take.", "Be friendly and precise.", "Report results as short bullet-like sentences."]
RULES = [
    "Use the tools instead of guessing; never invent identifiers.",
    "If a tool fails temporarily, retry it before giving up.",
    "Tell the user plainly when something only partly worked.",
    "Do only what the user asked for.",
    "Quote the identifiers returned by tools in your answer.",
]


class RepoAgent(BaseModel):
    """One agent: name, system prompt and the names of the tools it may call."""

    model_config = ConfigDict(extra="forbid")
    name: str
    category: str
    domain: str
    system_prompt: str
    tools: list[str]


def sample_agents(tools: Sequence[RepoTool], n: int, min_tools: int, max_tools: int, seed: int) -> list[RepoAgent]:
    """`n` agents; each picks a domain (weighted by its tool count), takes most tools from it and tops up from its
    category and, one time in four, from anywhere."""
    rng = random.Random(seed)
    by_domain: dict[str, list[RepoTool]] = defaultdict(list)
    by_category: dict[str, list[RepoTool]] = defaultdict(list)
    for t in tools:
        by_domain[t.domain].append(t)
        by_category[t.category].append(t)
    domains = sorted(by_domain)
    weights = [len(by_domain[d]) for d in domains]
    agents = []
    for i in range(n):
        domain = rng.choices(domains, weights)[0]
        home = by_domain[domain]
        category = home[0].category
        size = rng.randint(min_tools, max_tools)
        picked = rng.sample(home, min(len(home), size))
        pool = [t for t in by_category[category] if t not in picked]
        picked += rng.sample(pool, min(len(pool), size - len(picked)))
        if rng.random() < 0.25:
            picked.append(rng.choice(list(tools)))
        names = list(dict.fromkeys(t.name for t in picked))
        rules = list(dict.fromkeys(rng.sample(RULES, 2)))
        prompt = " ".join([rng.choice(ROLES).format(domain=domain, category=category), rng.choice(STYLES), *rules])
        agents.append(RepoAgent(name=f"agent-{seed}-{i:05d}", category=category, domain=domain, system_prompt=prompt, tools=names))
    return agents
