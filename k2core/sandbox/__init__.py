"""A jail for untrusted code (model-written programs): bubblewrap namespaces plus rlimits, never a fallback.

`run_python(source, config=...)` or `run_in_sandbox(argv, config=...)` -> `SandboxResult`. HumanEval scoring and
the RL code rewards run programs through it. Missing bubblewrap is a `SandboxUnavailableError` (a UserError).
"""

from k2core.sandbox.config import SandboxConfig
from k2core.sandbox.jail import SandboxUnavailableError, ensure_available
from k2core.sandbox.run import SandboxError, SandboxResult, run_in_sandbox, run_python

__all__ = [
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailableError",
    "ensure_available",
    "run_in_sandbox",
    "run_python",
]
