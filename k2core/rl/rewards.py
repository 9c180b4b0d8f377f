"""Verifiable rewards behind one registry (the K2 "Verifiable Rewards Gym", offline part).

Every reward function maps `(response, ground_truth)` to `{"score": float, **extras}`. `RewardScorer`
dispatches by task type and turns *any* exception into a score of 0 that is counted, so that a broken
verifier shows up in the logs instead of silently paying (or withholding) reward.

The math reward checks answers with math-verify. math-verify's own timeout uses `signal.alarm`, which
raises when called off the main thread, so it is called with its timeouts disabled inside a worker
subprocess (`k2core.rl.verify_worker`) that this module kills and restarts when a check runs past
`timeout_s`. Integer and identical answers are decided here without the worker.
"""

from __future__ import annotations

import atexit
import json
import re
import select
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RewardFn = Callable[..., dict[str, Any]]

_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register `fn(response, ground_truth, *, timeout_s) -> {"score", ...}` under a task type."""

    def decorate(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered; pick another task-type name")
        _REGISTRY[name] = fn
        return fn

    return decorate


def get_reward(name: str) -> RewardFn:
    """The reward registered for a task type."""
    if name not in _REGISTRY:
        raise KeyError(f"no reward registered for task type {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


class RewardScorer:
    """Scores responses by task type; exceptions (timeouts included) score 0 and are counted per type."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.errors: Counter[str] = Counter()

    def __call__(self, task_type: str, response: str, ground_truth: str) -> dict[str, Any]:
        fn = get_reward(task_type)
        try:
            result = fn(response, ground_truth, timeout_s=self.timeout_s)
            result["score"] = float(result["score"])
        except Exception as exc:  # noqa: BLE001 - any verifier failure must cost the sample its reward
            self.errors[task_type] += 1
            return {"score": 0.0, "error": f"{type(exc).__name__}: {exc}"}
        return result


# --------------------------------------------------------------------------- answer extraction

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_answer(text: str) -> str | None:
    """The final answer: the last `\\boxed{}` if any, else the last number in the text."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "").replace(" ", "") if numbers else None


def _as_int(text: str) -> int | None:
    s = text.strip().replace(",", "")
    return int(s) if re.fullmatch(r"-?\d+", s) else None


# --------------------------------------------------------------------------- math-verify worker

_STARTUP_TIMEOUT_S = 120.0
# Run by path, not with -m: importing the k2core.rl package would pull in torch and transformers.
_WORKER_SCRIPT = Path(__file__).with_name("verify_worker.py")


class _Verifier:
    """One long-lived `k2core.rl.verify_worker` subprocess; killed and restarted when a check times out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def _readline(self, proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any] | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the math-verify worker exited (code {proc.poll()})")
        return json.loads(line)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            proc = subprocess.Popen(
                [sys.executable, str(_WORKER_SCRIPT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            )
            # Start-up (importing sympy) is not part of any check's time budget.
            if self._readline(proc, _STARTUP_TIMEOUT_S) is None:
                proc.kill()
                raise TimeoutError(f"the math-verify worker did not start within {_STARTUP_TIMEOUT_S}s")
            self._proc = proc
        return self._proc

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def equivalent(self, gold: str, pred: str, timeout_s: float) -> bool:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps([gold, pred]) + "\n")
                proc.stdin.flush()
                reply = self._readline(proc, timeout_s)
            except (OSError, RuntimeError):
                self.stop()
                raise
            if reply is None:
                self.stop()
                raise TimeoutError(f"math-verify took longer than {timeout_s}s on {pred[:80]!r}")
        if "error" in reply:
            raise ValueError(f"math-verify failed: {reply['error']}")
        return bool(reply["ok"])


_VERIFIER = _Verifier()
atexit.register(_VERIFIER.stop)


def answers_match(gold: str, pred: str, timeout_s: float) -> bool:
    """Whether two answers are mathematically equal; integers and identical strings skip math-verify."""
    gold, pred = gold.strip().strip("$").strip(), pred.strip().strip("$").strip()
    if gold == pred:
        return True
    gi, pi = _as_int(gold), _as_int(pred)
    if gi is not None and pi is not None:
        return gi == pi
    return _VERIFIER.equivalent(gold, pred, timeout_s)


# --------------------------------------------------------------------------- registered rewards


@register_reward("math")
def math_reward(response: str, ground_truth: str, *, timeout_s: float) -> dict[str, Any]:
    """1 if the final answer (last `\\boxed{}` or last number) equals the reference, else 0."""
    answer = extract_answer(response)
    if answer is None:
        return {"score": 0.0, "extracted": None}
    return {"score": float(answers_match(ground_truth, answer, timeout_s)), "extracted": answer}


@register_reward("exact")
def exact_reward(response: str, ground_truth: str, *, timeout_s: float) -> dict[str, Any]:
    """1 if the stripped response equals the stripped reference (logic puzzles, short codes)."""
    del timeout_s  # exact comparison cannot hang
    return {"score": float(response.strip() == ground_truth.strip())}
