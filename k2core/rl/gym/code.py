"""Code domain: the response's function runs in the sandbox on hidden inputs; the host compares the outputs.

Why it resists the known hacks: the expected outputs never enter the jail. A trusted harness reads a fresh nonce
and the test *inputs* from stdin, closes stdin, points fd 1 at stderr (so the candidate's prints cannot reach the
report channel by accident), imports the candidate from /sandbox/solution.py as a module, then calls the entry
point on each input and writes `K2-GYM-RESULT <nonce> <json>` lines to its private copy of stdout, ending with a
`done` line. The host, outside the jail, accepts a result only with this run's nonce, exactly one line per test,
and the `done` line; then it compares each JSON value with the expected one. So exiting early (os._exit, sys.exit,
a signal), redefining assert or a check function, monkeypatching the harness or json, or reading every file and
stdin in the jail can at most forge *values*, and a forged value only scores when it is the right answer. Values
must be JSON (an object whose __eq__ is always true never reaches the comparison).
Residual: a candidate that forges the nonce (it can read the harness's memory) can report any values and `done`,
yet still has to know the expected outputs to score, i.e. solve the problem on the hidden inputs.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any

from k2core.rl.gym.code_problems import generate_problem
from k2core.rl.gym.config import GymConfig
from k2core.rl.gym.core import Info, Message, Sample, require, user_prompt
from k2core.rl.gym.extract import strip_reasoning
from k2core.sandbox import SandboxResult, run_in_sandbox

MARKER = "K2-GYM-RESULT"
HARNESS_PATH = "/sandbox/harness.py"
SOLUTION_PATH = "/sandbox/solution.py"
HARNESS = f'''\
import importlib.util, json, os, sys
def main():
    nonce = sys.stdin.buffer.readline().strip().decode()
    job = json.loads(sys.stdin.buffer.readline())
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    report = os.dup(1)
    os.dup2(2, 1)
    def send(payload):
        os.write(report, ("{MARKER} " + nonce + " " + json.dumps(payload) + "\\n").encode())
    try:
        spec = importlib.util.spec_from_file_location("solution", "{SOLUTION_PATH}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, job["entry_point"])
    except BaseException as error:
        os.write(2, ("k2-harness: " + type(error).__name__ + ": " + str(error)[:300] + "\\n").encode("utf-8", "replace"))
        os._exit(1)
    for index, args in enumerate(job["inputs"]):
        try:
            value = function(*args)
            send({{"i": index, "value": value}})
        except BaseException as error:
            send({{"i": index, "error": type(error).__name__}})
    send({{"done": True}})
    os._exit(0)
main()
'''
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(response: str) -> str:
    """The last fenced Python block of the response (reasoning dropped), else the whole remaining text."""
    body = strip_reasoning(response)
    blocks = _FENCE.findall(body)
    return blocks[-1] if blocks else body


def same_value(got: Any, expected: Any) -> bool:
    """JSON equality with bools distinct from numbers and a relative tolerance on floats."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(expected, float) or isinstance(got, float):
        return isinstance(got, int | float) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, list | tuple):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same_value, got, expected))
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(
            same_value(got[k], v) for k, v in expected.items())
    return type(got) is type(expected) and got == expected


def read_results(result: SandboxResult, nonce: str, tests: int) -> tuple[dict[int, Any] | None, str]:
    """The reported value of each test, or None (and why) unless the run reported every test once and finished."""
    prefix = f"{MARKER} {nonce} "
    values: dict[int, Any] = {}
    done = False
    for line in result.stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            payload = json.loads(line[len(prefix):])
        except json.JSONDecodeError:
            return None, "a malformed result line"
        if not isinstance(payload, dict):
            return None, "a malformed result line"
        if payload.get("done") is True:
            done = True
        elif payload.get("i") in values or not isinstance(payload.get("i"), int):
            return None, "a test reported twice or without an index"
        else:
            values[payload["i"]] = payload
    if result.timed_out or result.cpu_exceeded or result.output_exceeded:
        return None, "a limit was hit (time, CPU or output)"
    if not done or result.exit_code != 0 or sorted(values) != list(range(tests)):
        for line in reversed(result.stderr.splitlines()):
            if line.startswith("k2-harness: "):
                return None, "failed to load: " + line.removeprefix("k2-harness: ")
        return None, f"exited (status {result.exit_code}) before the tests finished"
    return values, "finished"


class CodeDomain:
    """Function synthesis with hidden unit tests; reward = share of tests passed (or 1/0 with `code_reward: all`)."""

    name = "code"

    def __init__(self, config: GymConfig) -> None:
        self.config = config

    def generate(self, seed: int) -> Sample:
        return generate_problem(seed, self.config.code_tests)

    def prompt(self, sample: Sample) -> list[Message]:
        (text,) = require(sample, self.name, "prompt")
        return user_prompt(text)

    def run(self, sample: Sample, source: str) -> tuple[list[bool], str]:
        """Each hidden test's verdict for a candidate program, and how the run ended."""
        entry_point, tests = require(sample, self.name, "entry_point", "tests")
        nonce = secrets.token_hex(16)
        job = json.dumps({"entry_point": entry_point, "inputs": [t["args"] for t in tests]})
        sandbox = self.config.code_sandbox
        result = run_in_sandbox(
            [sandbox.python, "-I", HARNESS_PATH], config=sandbox,
            readonly_files={HARNESS_PATH: HARNESS, SOLUTION_PATH: source}, stdin=f"{nonce}\n{job}\n")
        values, why = read_results(result, nonce, len(tests))
        if values is None:
            return [False] * len(tests), why
        return [("value" in values[i] and same_value(values[i]["value"], t["expected"]))
                for i, t in enumerate(tests)], why

    def score(self, sample: Sample, response: str) -> tuple[float, Info]:
        passed, why = self.run(sample, extract_code(response))
        share = sum(passed) / len(passed) if passed else 0.0
        reward = share if self.config.code_reward == "fraction" else float(all(passed) and bool(passed))
        return reward, {"passed": sum(passed), "tests": len(passed), "run": why}
