"""Typed configuration from `params.yaml` profiles.

`params.yaml` has one section per stage and, inside it, one entry per profile
(`tiny`, `ci`, `small`; YAML anchors share values between profiles). The active
profile is `profile:` at the top (DVC tracks it, so it is never overridden from
the environment: what ran is what params.yaml says). Each section is
validated by the config class its area owns, so a typo or a wrong type fails
with the exact key path instead of silently using a default.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from k2core.errors import UserError

SECTIONS: dict[str, str] = {
    "model": "k2core.model:K2Config",
    "synth": "k2core.data.synth:SynthConfig",
    "validate": "k2core.validation:ValidateConfig",
    "tokenizer": "k2core.data.tokenizer:TokenizerConfig",
    "pretrain": "k2core.train:PretrainConfig",
    "sft": "k2core.train:SFTConfig",
    "rl": "k2core.rl:RLConfig",
    "bench": "k2core.eval:BenchConfig",
    "storage": "k2core.storage.root:StorageConfig",
}


class ConfigError(UserError, ValueError):
    """A params.yaml problem, worded so the user knows which key to fix."""


def config_class(section: str) -> type[BaseModel]:
    module_name, class_name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _describe(error: dict[str, Any], prefix: str) -> str:
    location = ".".join(str(part) for part in error["loc"])
    key = f"{prefix}.{location}" if location else prefix
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (typo?); remove it or check the spelling"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


@dataclass(frozen=True)
class Params:
    """The raw params file with the active profile; sections are validated on access."""

    path: Path
    profile: str
    raw: dict[str, Any]

    def section_dict(self, section: str) -> dict[str, Any]:
        if section not in SECTIONS:
            raise ConfigError(f"{self.path}: unknown section {section!r}; known: {sorted(SECTIONS)}")
        profiles = self.raw.get(section)
        if not isinstance(profiles, dict):
            raise ConfigError(f"{self.path}: section {section!r} is missing or not a mapping of profiles")
        if self.profile not in profiles:
            raise ConfigError(
                f"{self.path}: section {section!r} has no profile {self.profile!r}; "
                f"it defines {sorted(profiles)}"
            )
        return profiles[self.profile]

    def section(self, section: str) -> BaseModel:
        """The validated config object of one section for the active profile."""
        values = self.section_dict(section)
        prefix = f"{section}.{self.profile}"
        try:
            return config_class(section).model_validate(values)
        except ValidationError as exc:
            problems = "\n  ".join(_describe(e, prefix) for e in exc.errors())
            raise ConfigError(f"{self.path}: invalid values (fix them there):\n  {problems}") from None

    def section_hash(self, section: str) -> str:
        """A short stable hash of the section's values, used to tag tracking runs."""
        payload = json.dumps(self.section_dict(section), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def validate_all(self) -> dict[str, BaseModel]:
        return {name: self.section(name) for name in SECTIONS}


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read `params.yaml`, check its top-level keys and pick the profile."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run k2 from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    unknown = sorted(set(raw) - set(SECTIONS) - {"profile"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {unknown}; known: profile, {sorted(SECTIONS)}")
    chosen = profile or raw.get("profile")
    if not isinstance(chosen, str):
        raise ConfigError(f"{path}: set `profile:` to one of the profiles (tiny, ci, small)")
    return Params(path=path, profile=chosen, raw=raw)
