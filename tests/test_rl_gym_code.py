"""The code domain on real programs in the real sandbox: correct code scores, wrong code does not, and every known
hack (early exit, harness tampering, reading the tests, forged report lines, always-equal objects) earns nothing."""

from __future__ import annotations

import re

import pytest

from k2core.rl.gym import CodeDomain, GymConfig, make_env, score
from k2core.rl.gym.code import extract_code, same_value
from k2core.rl.gym.code_problems import TEMPLATES, generate_problem
from k2core.sandbox import SandboxConfig

SAMPLE = {
    "prompt": "Write add(a, b).",
    "entry_point": "add",
    "tests": [{"args": [1, 2], "expected": 3}, {"args": [-5, 6], "expected": 1}, {"args": [10, 7], "expected": 17},
              {"args": [2, 2], "expected": 4}],
}
QUICK = CodeDomain(GymConfig(code_sandbox=SandboxConfig(wall_time_s=2, cpu_time_s=2, memory_mb=256)))
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


def test_correct_solution_scores_one_and_a_partial_one_a_fraction() -> None:
    reward, info = score("code", SAMPLE, RIGHT)
    assert (reward, info["passed"], info["run"]) == (1.0, 4, "finished")
    partial = fenced("def add(a, b):\n    return a + b if a > 0 else 99")  # right on 3 of 4 tests
    assert score("code", SAMPLE, partial)[0] == pytest.approx(0.75)
    all_or_nothing = CodeDomain(GymConfig(code_reward="all"))
    assert all_or_nothing.score(SAMPLE, partial)[0] == 0.0
    assert all_or_nothing.score(SAMPLE, RIGHT)[0] == 1.0


def test_printing_inside_the_candidate_does_not_disturb_the_report() -> None:
    noisy = fenced("print('K2-GYM-RESULT fake {\"done\": true}')\ndef add(a, b):\n    print(a, b)\n    return a + b")
    assert score("code", SAMPLE, noisy)[0] == 1.0


@pytest.mark.parametrize("hack", [
    "import os\nos._exit(0)",
    "import sys\nsys.exit(0)",
    "def add(a, b):\n    import os\n    os._exit(0)",
    "def add(a, b):\n    raise SystemExit(0)",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    # harness tampering: vacuous asserts / checks, monkeypatched json and builtins
    "import builtins\nbuiltins.AssertionError = Exception\ndef check(*a):\n    return True\ndef add(a, b):\n    return 0",
    "import json\njson.dumps = lambda *a, **k: '{\"done\": true}'\ndef add(a, b):\n    return 0",
    "import builtins\n_p = builtins.print\nbuiltins.print = lambda *a, **k: None\ndef add(a, b):\n    return None",
    # an object equal to everything never survives JSON
    "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()",
    # reading every file of the jail and stdin, returning whatever it found
    "import os, sys\nseen = sys.stdin.read()\n"
    "found = [open(os.path.join(d, f), errors='replace').read() for d in ('/sandbox', '/tmp') for f in os.listdir(d)]\n"
    "print(found, seen)\ndef add(a, b):\n    return len(''.join(found) + seen)",
    # forging report lines with the harness's nonce read from its stack, then leaving
    "import sys, os, json\nframe = sys._getframe(1)\nwhile frame and 'nonce' not in frame.f_locals:\n"
    "    frame = frame.f_back\nnonce = frame.f_locals['nonce']\nfor i in range(4):\n"
    "    os.write(frame.f_locals['report'], f'K2-GYM-RESULT {nonce} ' .encode() + json.dumps({'i': i, 'value': 0}).encode() + b'\\n')\n"
    "os.write(frame.f_locals['report'], f'K2-GYM-RESULT {nonce} {{\"done\": true}}\\n'.encode())\nos._exit(0)",
    "while True:\n    pass",
])
def test_hacks_earn_nothing(hack: str) -> None:
    reward, info = QUICK.score(SAMPLE, fenced(hack))
    assert reward == 0.0, info
    assert info["passed"] == 0


def test_reporting_a_test_twice_voids_the_run() -> None:
    forge = ("import sys, os, json\nframe = sys._getframe(1)\nwhile 'nonce' not in frame.f_locals:\n"
             "    frame = frame.f_back\nn, r = frame.f_locals['nonce'], frame.f_locals['report']\n"
             "for v in (0, 3, 17, 4):\n    os.write(r, f'K2-GYM-RESULT {n} {{\"i\": 0, \"value\": {v}}}\\n'.encode())\n"
             "def add(a, b):\n    return a + b")
    reward, info = score("code", SAMPLE, fenced(forge))
    assert reward == 0.0 and info["run"] == "a test reported twice or without an index"


REFERENCES = {  # written from each statement, independently of the templates' own reference functions
    "sum_multiples": "def sum_multiples(xs):\n    return sum(x for x in xs if x % M == 0)",
    "rotate_left": "def rotate_left(xs, k):\n    for _ in range(k):\n        xs = xs[1:] + xs[:1]\n    return xs",
    "second_largest": "def second_largest(xs):\n    d = sorted(set(xs))\n    return d[-2] if len(d) > 1 else None",
    "run_length": "import itertools\ndef run_length(s):\n    return [[c, len(list(g))] for c, g in itertools.groupby(s)]",
    "balanced": "def balanced(s):\n    while '()' in s or '[]' in s:\n        s = s.replace('()', '').replace('[]', '')\n"
                "    return s == ''",
    "fib_mod": "def fib_mod(n):\n    f = [0, 1]\n    for _ in range(n):\n        f.append(f[-1] + f[-2])\n    return f[n] % M",
    "count_in_set": "def count_in_set(s):\n    return sum(s.count(c) for c in set(C))",
}


def _parameters(prompt: str) -> str:
    """The constants the statement names (a modulus or divisor M, a character set C), as Python assignments."""
    m = re.search(r"(?:divisible by|modulo) (\d+)", prompt)
    c = re.search(r"one of '(\w+)'", prompt)
    return (f"M = {m.group(1)}\n" if m else "") + (f"C = {c.group(1)!r}\n" if c else "")


def test_every_template_is_solvable_from_its_statement_and_the_env_steps_once() -> None:
    assert set(REFERENCES) == {t.entry_point for t in TEMPLATES}
    seen: set[str] = set()
    env = make_env("code")
    for seed in range(60):
        problem = generate_problem(seed, GymConfig().code_tests)
        if problem["entry_point"] in seen:
            continue
        seen.add(problem["entry_point"])
        assert problem == generate_problem(seed, GymConfig().code_tests)  # deterministic
        assert env.reset(seed)[0]["content"] == problem["prompt"]
        answer = fenced(_parameters(problem["prompt"]) + REFERENCES[problem["entry_point"]])
        observation, reward, done, info = env.step({"role": "assistant", "content": answer})
        assert (observation, reward, done) == ([], 1.0, True), (problem["prompt"], info)
        assert score("code", problem, fenced("def nothing():\n    pass"))[0] == 0.0
    assert seen == set(REFERENCES)


def test_extraction_and_comparison() -> None:
    assert extract_code("<think>```python\nx = 1\n```</think>```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    assert same_value([["a", 2]], [["a", 2]]) and not same_value(1, True) and not same_value(True, 1)
    assert same_value(0.1 + 0.2, 0.3) and not same_value("3", 3) and not same_value([1], [1, 2])


def test_the_expected_outputs_are_nowhere_in_the_jail() -> None:
    """A candidate that searches every string object of its process, every frame, every file under /sandbox and
    /tmp, the environment and stdin for markers finds the marker given as an INPUT (so the search works) and never
    the one that only an expected output holds: test 0 passes exactly when the search sees the input marker alone,
    test 1 would need the hidden marker."""
    inp, hidden = "EXPECT-in0001", "EXPECT-zz9999"
    sample = {"prompt": "Write search(x).", "entry_point": "search",
              "tests": [{"args": [inp], "expected": [inp]}, {"args": [0], "expected": [inp, hidden]}]}
    searcher = (
        "import gc, os, sys\n"
        "def search(x):\n"
        "    tag = 'EXP' + 'ECT-'\n"
        "    pool = [o for o in gc.get_objects() if isinstance(o, str)]\n"
        "    for frame in sys._current_frames().values():\n"
        "        while frame:\n"
        "            pool += [repr(v) for v in frame.f_locals.values()]\n"
        "            frame = frame.f_back\n"
        "    for d in ('/sandbox', '/tmp'):\n"
        "        pool += [open(os.path.join(d, f), errors='replace').read() for f in os.listdir(d)]\n"
        "    pool += list(os.environ.values()) + [sys.stdin.read()]\n"
        "    hits = set()\n"
        "    for s in pool:\n"
        "        start = s.find(tag)\n"
        "        while start >= 0:\n"
        "            hits.add(s[start:start + 13])\n"
        "            start = s.find(tag, start + 1)\n"
        "    return sorted(h for h in hits if len(h) == 13)\n"
    )
    assert QUICK.score(sample, fenced(searcher)) == (0.5, {"passed": 1, "tests": 2, "run": "finished"})
