"""Named crash points, so kill tests can SIGKILL a stage at an exact moment (during a save, during publishing).

`K2_FAULT=NAME:N` makes the process send itself SIGKILL at the N-th time it reaches crash point NAME (counted per
process); unset, as in every normal run, `crash_point` returns at once. The kill is a real SIGKILL: no handler,
`finally` or atexit code runs, exactly as when the machine or an operator kills the process.

Points: `step` inside a training step (weights stepped, QK-Clip not yet; k2core/train/loop.py, RL's policy_update),
`save` with a checkpoint written but not committed (DeepSpeed's `latest` not yet moved; RL's state file not yet
renamed into place), `publish` in tasks/training.py (1st: the new folder complete beside the old one, 2nd: swapped
in, not yet logged to MLflow). tests/test_kill_resume.py uses them.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "K2_FAULT"
POINTS = ("step", "save", "publish")

_reached: Counter[str] = Counter()


def parse_fault(spec: str) -> tuple[str, int]:
    """`"save:2"` -> ("save", 2); anything else is an error naming the variable and the accepted form."""
    name, _, nth = spec.partition(":")
    if name not in POINTS or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected NAME:N with NAME one of {', '.join(POINTS)} and N >= 1 "
                         f"(e.g. {ENV}=save:1); unset it for a normal run")
    return name, int(nth)


def crash_point(name: str) -> None:
    """Count one arrival at crash point `name`; SIGKILL this process if `K2_FAULT` names this arrival."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; add it to k2core.faults.POINTS")
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, nth = parse_fault(spec)
    _reached[name] += 1
    if name == target and _reached[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
