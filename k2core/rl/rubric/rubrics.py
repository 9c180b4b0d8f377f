"""Rubrics as versioned YAML files (K2 appendix F), validated on load.

A rubric file has `name`, `version`, `kind` ("core" | "prescriptive" | "human") and `criteria` (each `key`, `title`,
`text`). Prescriptive criteria also name their deterministic `detector` (k2core.rl.rubric.prescriptive); human
rubrics name the `contexts` (tags) they apply to. The repository's rubrics live in `k2core/rl/rubrics/`: `core.yaml`,
`prescriptive.yaml` and `human/*.yaml`. `select_rubrics` picks core + prescriptive + the human rubrics whose contexts
meet a prompt's tags; `RubricSet.fingerprint()` (name@version list) is recorded with rewards and critic data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from k2core.config import _describe
from k2core.errors import UserError
from k2core.rl.rubric.prescriptive import DETECTORS

RUBRICS_DIR = Path(__file__).resolve().parent.parent / "rubrics"

_KEY_PATTERN = r"^[a-z][a-z0-9_]*$"


class RubricError(UserError, ValueError):
    """A rubric file that cannot be used; the message names the file and key."""


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=_KEY_PATTERN)
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)
    detector: str | None = None  # prescriptive criteria only: a name in prescriptive.DETECTORS


class Rubric(BaseModel):
    """One rubric file's content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_KEY_PATTERN)
    version: int = Field(ge=1)
    kind: Literal["core", "prescriptive", "human"]
    criteria: list[Criterion] = Field(min_length=1)
    contexts: list[str] = Field(default_factory=list)  # human rubrics: the context tags that select them
    annotator: str | None = None

    @model_validator(mode="after")
    def _kind_rules(self) -> "Rubric":
        keys = [c.key for c in self.criteria]
        if len(set(keys)) != len(keys):
            raise ValueError(f"criteria keys must be unique, got {keys}")
        for criterion in self.criteria:
            if self.kind == "prescriptive":
                if criterion.detector not in DETECTORS:
                    raise ValueError(f"criterion {criterion.key!r}: detector must be one of {sorted(DETECTORS)}, "
                                     f"got {criterion.detector!r}")
            elif criterion.detector is not None:
                raise ValueError(f"criterion {criterion.key!r}: only prescriptive rubrics name a detector")
        if self.kind == "human" and not self.contexts:
            raise ValueError("a human rubric lists the context tags it applies to in `contexts`")
        if self.kind != "human" and self.contexts:
            raise ValueError("only human rubrics are selected by `contexts`")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class RubricSet(BaseModel):
    """The rubrics one prompt is judged against."""

    model_config = ConfigDict(frozen=True)

    rubrics: tuple[Rubric, ...]

    def of_kind(self, kind: str) -> list[Rubric]:
        return [r for r in self.rubrics if r.kind == kind]

    def prescriptive_criteria(self) -> list[Criterion]:
        return [c for r in self.of_kind("prescriptive") for c in r.criteria]

    def fingerprint(self) -> str:
        """`name@version` of every rubric, in order: what a reward was computed against."""
        return ",".join(r.ref for r in self.rubrics)


def load_rubric(path: str | Path) -> Rubric:
    """One rubric file, validated; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RubricError(f"{path}: rubric file not found") from None
    except yaml.YAMLError as exc:
        raise RubricError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RubricError(f"{path}: a rubric file is a mapping with name, version, kind and criteria")
    try:
        return Rubric.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e, path.stem) for e in exc.errors())
        raise RubricError(f"{path}: invalid rubric (fix it there):\n  {problems}") from None


def load_library(folder: str | Path = RUBRICS_DIR) -> list[Rubric]:
    """Every `*.yaml` rubric under `folder` (recursively, sorted by path); rubric names must be unique."""
    folder = Path(folder)
    paths = sorted(folder.rglob("*.yaml"))
    if not paths:
        raise RubricError(f"{folder}: no rubric files (*.yaml) found")
    library: list[Rubric] = []
    seen: dict[str, Path] = {}
    for path in paths:
        rubric = load_rubric(path)
        if rubric.name in seen:
            raise RubricError(f"{path}: rubric name {rubric.name!r} is also used by {seen[rubric.name]}; rename one")
        seen[rubric.name] = path
        library.append(rubric)
    return library


def select_rubrics(library: list[Rubric], contexts: list[str] | tuple[str, ...] = ()) -> RubricSet:
    """Core and prescriptive rubrics always, plus the human rubrics whose `contexts` meet the prompt's tags."""
    tags = set(contexts)
    order = {"core": 0, "prescriptive": 1, "human": 2}
    chosen = [r for r in library if r.kind != "human" or tags & set(r.contexts)]
    if not any(r.kind == "core" for r in chosen):
        raise RubricError("the rubric library has no core rubric; add k2core/rl/rubrics/core.yaml")
    return RubricSet(rubrics=tuple(sorted(chosen, key=lambda r: (order[r.kind], r.name))))
