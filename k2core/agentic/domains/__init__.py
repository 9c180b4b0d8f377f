"""The executable tool environments, by name."""

from k2core.agentic.domains.library import LibraryEnv
from k2core.agentic.domains.retail import RetailEnv
from k2core.agentic.env import ToolEnv

ENVIRONMENTS: dict[str, type[ToolEnv]] = {"retail": RetailEnv, "library": LibraryEnv}


def make_env(name: str) -> ToolEnv:
    """Instantiate an environment by name; raises with the valid names if unknown."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown tool environment {name!r}; choose one of {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name]()


__all__ = ["ENVIRONMENTS", "LibraryEnv", "RetailEnv", "make_env"]
