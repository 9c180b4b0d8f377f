"""RL's resume state: what an iteration boundary carries forward, saved so a killed run continues bitwise.

At the end of an iteration RL holds no rollout buffer (rollouts are drawn and consumed within the iteration), so the
state is the policy's weights and buffers, the optimizer's state when it is kept across iterations
(`rl.reset_optimizer: false`; k1.5's default resets Muon every iteration and leaves none), every random stream that
later iterations draw from (prompt choice, sampling generator, PTX batches, torch's global generator), the
reward-error counts and the metric history (whose length is the iteration counter).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from k2core.faults import crash_point
from k2core.rl.mix import GymScorer
from k2core.rl.ptx import PTXSampler

STATE_FILE = "rl_state.pt"
FORMAT = 1


@dataclass
class RLProgress:
    """The mutable parts of an RL run; `history` has one entry per finished iteration."""

    model: nn.Module
    rng: random.Random
    generator: torch.Generator
    ptx: PTXSampler | None
    scorer: GymScorer
    optimizer: torch.optim.Optimizer | None = None  # only when it is kept across iterations
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def iteration(self) -> int:
        """How many iterations are done (the next one to run, 0-based)."""
        return len(self.history)

    def state_dict(self) -> dict[str, Any]:
        random_states: dict[str, Any] = {
            "python": self.rng.getstate(),
            "torch": torch.get_rng_state(),
            "sampling": self.generator.get_state(),
        }
        if self.ptx is not None:
            random_states["ptx"] = self.ptx.get_state()
        if torch.cuda.is_available():
            random_states["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "format": FORMAT,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "random": random_states,
            "reward_errors": dict(self.scorer.errors),
            "history": self.history,
        }
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        if state.get("format") != FORMAT or state["iteration"] != len(state["history"]):
            raise ValueError(f"{source} is not an RL resume state this code wrote; delete it to start RL over")
        if ("optimizer" in state) != (self.optimizer is not None):
            raise ValueError(f"{source} was written with rl.reset_optimizer={'optimizer' not in state}, this run has "
                             f"rl.reset_optimizer={self.optimizer is None}; delete it to start RL over")
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        random_states = state["random"]
        self.rng.setstate(random_states["python"])
        torch.set_rng_state(random_states["torch"])
        self.generator.set_state(random_states["sampling"])
        if self.ptx is not None:
            self.ptx.set_state(random_states["ptx"])
        if "cuda" in random_states:
            torch.cuda.set_rng_state_all(random_states["cuda"])
        self.scorer.errors.clear()
        self.scorer.errors.update(state["reward_errors"])
        self.history = list(state["history"])


def save_progress(progress: RLProgress, out_dir: Path) -> Path:
    """Write `out_dir/rl_state.pt` atomically: a temporary file, flushed to disk, then renamed over the old one.

    A kill at any moment leaves the previous complete state (or none) at the final name.
    """
    path = Path(out_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(progress.state_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    crash_point("save")
    os.replace(tmp, path)
    return path


def resume_progress(progress: RLProgress, out_dir: Path, iterations: int) -> bool:
    """Load `out_dir/rl_state.pt` into `progress` if it exists (True when it did); a state with more than
    `iterations` done belongs to another run."""
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one clear line naming the file
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to start RL over") from exc
    if state.get("iteration", 0) > iterations:
        raise ValueError(f"{path} holds {state['iteration']} RL iterations but rl.iterations is {iterations}; "
                         "delete it to start RL over")
    progress.load_state_dict(state, path)
    return True
