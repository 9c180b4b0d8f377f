"""The gym's one interface: domains (prompt + verifier), environments (reset/step), a registry, and `score`.

A *sample* is a JSON-like dict holding everything a verifier needs (the prompt text, the reference answer, hidden
tests, instruction arguments, a context); datasets store samples and the trainer scores responses against them.
A *domain* turns a sample into prompt messages and scores a response to it. An *environment* is the Gym-like view:
`reset(seed)` gives the prompt messages, `step(assistant_message)` gives `(observation, reward, done, info)`.
Single-turn environments are done after one step; a multi-turn environment (e.g. an adapter over
`k2core.agentic.env.ToolEnv` that runs the message's tool calls and answers with tool messages) implements the same
`Env` protocol and returns `done=False` until its episode ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]
Sample = dict[str, Any]
Info = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one `step` returns; unpacks as `(observation, reward, done, info)` like a Gym step."""

    observation: list[Message]
    reward: float
    done: bool
    info: Info

    def __iter__(self):  # noqa: ANN204 - tuple-style unpacking
        return iter((self.observation, self.reward, self.done, self.info))


@runtime_checkable
class Env(Protocol):
    """Any RL environment over chat messages, single- or multi-turn."""

    def reset(self, seed: int) -> list[Message]: ...

    def step(self, action: Message) -> StepResult: ...


@runtime_checkable
class Domain(Protocol):
    """A family of verifiable single-turn tasks: how a sample is asked and how a response to it is scored."""

    name: str

    def prompt(self, sample: Sample) -> list[Message]: ...

    def score(self, sample: Sample, response: str) -> tuple[float, Info]: ...


@runtime_checkable
class ProceduralDomain(Domain, Protocol):
    """A domain that can make its own samples (procedural generators): `generate(seed)` is deterministic."""

    def generate(self, seed: int) -> Sample: ...


class GymError(ValueError):
    """A bad use of the gym (unknown domain, a sample missing a field, an env without samples)."""


def user_prompt(text: str) -> list[Message]:
    """The prompt messages of a plain single-question sample."""
    return [{"role": "user", "content": text}]


def require(sample: Sample, domain: str, *fields: str) -> list[Any]:
    """The sample's values for `fields`, or one clear error naming the domain and the missing field."""
    missing = [f for f in fields if f not in sample]
    if missing:
        raise GymError(f"{domain}: sample lacks field(s) {missing}; it has {sorted(sample)}")
    return [sample[f] for f in fields]


class SingleTurnEnv:
    """One sample per episode: the prompt, one assistant turn, the domain's reward, done.

    Samples come from the domain's generator (procedural domains) or from a given list (`seed` picks one)."""

    def __init__(self, domain: Domain, samples: Sequence[Sample] | None = None) -> None:
        if samples is None and not isinstance(domain, ProceduralDomain):
            raise GymError(f"environment {domain.name!r} has no generator: pass `samples` (a list of its samples)")
        if samples is not None and not samples:
            raise GymError(f"environment {domain.name!r}: `samples` is empty")
        self.domain = domain
        self.samples = samples
        self.sample: Sample | None = None

    def reset(self, seed: int) -> list[Message]:
        if self.samples is not None:
            self.sample = self.samples[seed % len(self.samples)]
        else:
            self.sample = self.domain.generate(seed)  # type: ignore[attr-defined]
        return self.domain.prompt(self.sample)

    def step(self, action: Message) -> StepResult:
        if self.sample is None:
            raise GymError(f"environment {self.domain.name!r}: call reset(seed) before step, and again after done")
        sample, self.sample = self.sample, None
        reward, info = self.domain.score(sample, str(action.get("content") or ""))
        return StepResult(observation=[], reward=reward, done=True, info=info)


_DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    """Add a domain to the registry under its `name` (unique)."""
    if domain.name in _DOMAINS:
        raise GymError(f"gym domain {domain.name!r} is already registered; pick another name")
    _DOMAINS[domain.name] = domain
    return domain


def get_domain(name: str) -> Domain:
    """The registered domain called `name`."""
    if name not in _DOMAINS:
        raise GymError(f"no gym domain {name!r}; registered: {sorted(_DOMAINS)}")
    return _DOMAINS[name]


def domains() -> list[str]:
    """Names of every registered domain."""
    return sorted(_DOMAINS)


def make_env(name: str, samples: Sequence[Sample] | None = None) -> SingleTurnEnv:
    """The environment of a registered domain (procedural ones need no samples)."""
    return SingleTurnEnv(get_domain(name), samples)


def score(domain: str, sample: Sample, response: str) -> tuple[float, Info]:
    """The reward of `response` to `sample` in `domain`, and what the verifier found (one call for every domain)."""
    reward, info = get_domain(domain).score(sample, response)
    return float(reward), info

