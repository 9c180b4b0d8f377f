"""The gym's settings, typed. The defaults are what the registered domains use; the RL trainer's wiring (another
part of issue 10) is to build domains from params.yaml values through this model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k2core.sandbox import SandboxConfig


class GymConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    math_timeout_s: float = Field(5.0, gt=0, description="math-verify's time per comparison")
    reasoning_gym_seed: int = Field(0, description="base seed of the reasoning-gym generators")
    reasoning_gym_size: int = Field(1_000_000, ge=1, description="distinct samples per reasoning-gym dataset")
    code_reward: Literal["fraction", "all"] = Field("fraction", description="tests passed as a fraction, or 1/0")
    code_tests: int = Field(12, ge=1, description="hidden tests per generated code problem")
    code_sandbox: SandboxConfig = Field(
        default_factory=lambda: SandboxConfig(wall_time_s=5.0, cpu_time_s=5, memory_mb=256),
        description="jail limits of one code-reward run",
    )
    false_claim_penalty: float = Field(0.5, ge=0, description="subtracted when a response claims unmet compliance")
    overlap_threshold: float = Field(
        0.5, gt=0, le=1, description="baseline judge: share of a sentence's content words the context must hold")
