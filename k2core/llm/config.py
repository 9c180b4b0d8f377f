"""Which model answers a role's chat requests, as one `kind`-tagged block in params.yaml.

Examples (one per role, e.g. `synth.tiny.roles.rephraser`)::

    {kind: local}                                   # embedded SmolLM2-135M-Instruct, CPU
    {kind: local, path: models/qwen, device: auto}  # any HF folder or .gguf file
    {kind: k2, path: checkpoints/sft}               # one of this project's checkpoints
    {kind: openai, model: kimi-k2, base_url_env: K2_LLM_BASE_URL, requests_per_minute: 60}

`cache_dir` (any kind) keeps every answer in a sqlite file there, so re-running a stage is free and
gives the same data.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class _BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cache_dir: str | None = None  # local folder of the response cache; None = no cache

    @field_validator("cache_dir")
    @classmethod
    def _local_cache(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            raise ValueError("cache_dir must be a local folder (the cache is a sqlite file)")
        return value


class LocalLLMConfig(_BackendConfig):
    """A transformers model on this machine: an HF folder, a .gguf file, or (path None) the embedded SmolLM2."""

    kind: Literal["local"]
    path: str | None = None
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class K2LLMConfig(_BackendConfig):
    """One of this project's checkpoint folders (weights + tokenizer), prompted in K2's chat format."""

    kind: Literal["k2"]
    path: str
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class OpenAILLMConfig(_BackendConfig):
    """Any OpenAI-compatible server; the URL (ending in /v1) and key come from the named environment variables."""

    kind: Literal["openai"]
    model: str
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"  # unset is fine for servers without auth
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)  # retries after a 429, a 5xx or a connection error
    backoff_s: float = Field(default=1.0, ge=0)  # first retry delay; doubles each retry (Retry-After wins)
    requests_per_minute: float | None = Field(default=None, gt=0)  # client-side cap; None = no cap


LLMConfig = Annotated[Union[LocalLLMConfig, K2LLMConfig, OpenAILLMConfig], Field(discriminator="kind")]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(LLMConfig)


def parse_llm_config(values: dict[str, Any]) -> LocalLLMConfig | K2LLMConfig | OpenAILLMConfig:
    """Validate a plain dict (e.g. from YAML) into the config class its `kind` names."""
    return _ADAPTER.validate_python(values)
