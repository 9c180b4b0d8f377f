"""Per-value checks of the JSON columns (chat messages, tool specs, tasks), returning a reason or None.

Messages are checked with pydantic models of the OpenAI message shapes used in docs/contracts.md, then
as a conversation (tool results answer earlier calls, the last turn is the assistant's) and finally by
rendering them in K2's wire format. Tool parameter schemas must be valid JSON Schema.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from k2core.chat import SPECIAL_TOKENS, ChatFormatError, render

_NAME = r"^[A-Za-z0-9_\-.]{1,64}$"
_CALL_ID = r"^functions\.[A-Za-z0-9_\-.]{1,64}:\d+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FunctionCall(_Strict):
    name: str = Field(pattern=_NAME)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"arguments are not JSON ({error.msg})") from error
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object")
        return value


class ToolCall(_Strict):
    id: str = Field(pattern=_CALL_ID)
    type: Literal["function"]
    function: FunctionCall

    @model_validator(mode="after")
    def _id_names_function(self) -> ToolCall:
        if self.id.rsplit(":", 1)[0] != f"functions.{self.function.name}":
            raise ValueError(f"id {self.id!r} does not name the function {self.function.name!r}")
        return self


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str


class UserMessage(_Strict):
    role: Literal["user"]
    content: str = Field(min_length=1)


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if not self.content and not self.tool_calls:
            raise ValueError("assistant message has neither content nor tool_calls")
        return self


class ToolMessage(_Strict):
    role: Literal["tool"]
    tool_call_id: str = Field(pattern=_CALL_ID)
    name: str = Field(pattern=_NAME)
    content: str


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]
_CONVERSATION = TypeAdapter(list[Message])


class FunctionSpec(_Strict):
    name: str = Field(pattern=_NAME)
    description: str
    parameters: dict[str, Any]


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


_TOOLS = TypeAdapter(list[ToolSpec])
_ROLE_TAGS = {"system", "user", "assistant", "tool"}


def _first_error(error: ValidationError, prefix: str) -> str:
    detail = error.errors()[0]
    loc = list(detail["loc"])
    # Drop the union tag pydantic puts after a list index (e.g. messages[1].assistant.content).
    parts = [p for i, p in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and p in _ROLE_TAGS)]
    where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return f"{where}: {detail['msg']}"


def _load(value: Any, what: str) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, f"{what} must be a JSON string, got {type(value).__name__}"
    try:
        return json.loads(value), None
    except json.JSONDecodeError as error:
        return None, f"{what} is not valid JSON: {error.msg} at char {error.pos}"


def messages_error(value: Any) -> str | None:
    """Why `value` is not a valid SFT conversation (JSON list of OpenAI messages), or None."""
    raw, error = _load(value, "messages")
    if error:
        return error
    if not isinstance(raw, list) or not raw:
        return "messages must be a non-empty JSON list"
    try:
        messages = _CONVERSATION.validate_python(raw)
    except ValidationError as exc:
        return _first_error(exc, "messages")
    open_calls: dict[str, str] = {}
    for i, message in enumerate(messages):
        if isinstance(message, AssistantMessage):
            open_calls.update({c.id: c.function.name for c in message.tool_calls or []})
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in open_calls:
                return f"messages[{i}].tool_call_id {message.tool_call_id!r} answers no earlier tool call"
            if open_calls[message.tool_call_id] != message.name:
                called = open_calls[message.tool_call_id]
                return f"messages[{i}].name {message.name!r} differs from the called tool {called!r}"
    if not isinstance(messages[-1], AssistantMessage):
        return f"the last message must be the assistant's (nothing to train on), got role {messages[-1].role!r}"
    try:
        render(raw)
    except ChatFormatError as exc:
        return f"not renderable in K2's chat format: {exc}"
    return None


def tools_error(value: Any) -> str | None:
    """Why `value` is not a JSON list of OpenAI tool specs with valid JSON-Schema parameters, or None."""
    # Rows of one environment share their tools string: check each distinct string once.
    return _tools_error_of_text(value) if isinstance(value, str) else _tools_error(value)


@lru_cache(maxsize=4096)
def _tools_error_of_text(value: str) -> str | None:
    return _tools_error(value)


def _tools_error(value: Any) -> str | None:
    raw, error = _load(value, "tools")
    if error:
        return error
    if not isinstance(raw, list):
        return "tools must be a JSON list"
    try:
        specs = _TOOLS.validate_python(raw)
    except ValidationError as exc:
        return _first_error(exc, "tools")
    names = [s.function.name for s in specs]
    if len(set(names)) != len(names):
        return f"tools declares a name twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
    for i, spec in enumerate(specs):
        schema = spec.function.parameters
        problem = _schema_error(json.dumps(schema, sort_keys=True))
        if problem:
            return f"tools[{i}].function.parameters is not valid JSON Schema: {problem}"
        if schema.get("type") != "object":
            return f"tools[{i}].function.parameters must have type 'object'"
    if any(t in value for t in SPECIAL_TOKENS):
        return "tools contain a K2 special token"
    return None


@lru_cache(maxsize=16384)
def _schema_error(schema_text: str) -> str | None:
    """The metaschema check (about 1 ms) of one parameters schema, once per distinct schema: tool lists of different
    environments and agents share most of their tools."""
    schema = json.loads(schema_text)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


def declared_calls_error(messages: Any, tools: Any, source: Any) -> str | None:
    """Cross-field check of an SFT row: every tool call names a declared tool; tool rows declare tools."""
    if messages_error(messages) or tools_error(tools):
        return None  # reported by the column checks already
    declared = {t["function"]["name"] for t in json.loads(tools)}
    if source == "tool" and not declared:
        return "a source='tool' row must declare its tools"
    for i, message in enumerate(json.loads(messages)):
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] not in declared:
                return f"messages[{i}] calls {call['function']['name']!r}, which tools does not declare"
    return None


def gold_actions_error(value: Any) -> str | None:
    """Why `value` is not a non-empty JSON list of {"name": str, "arguments": object}, or None."""
    raw, error = _load(value, "gold_actions")
    if error:
        return error
    if not isinstance(raw, list) or not raw:
        return "gold_actions must be a non-empty JSON list"
    for i, action in enumerate(raw):
        if not isinstance(action, dict) or set(action) != {"name", "arguments"}:
            return f"gold_actions[{i}] must have exactly the keys name and arguments"
        if not isinstance(action["name"], str) or not action["name"]:
            return f"gold_actions[{i}].name must be a non-empty string"
        if not isinstance(action["arguments"], dict):
            return f"gold_actions[{i}].arguments must be a JSON object"
    return None


def json_object_error(value: Any, what: str) -> str | None:
    """Why `value` is not a JSON object string, or None."""
    raw, error = _load(value, what)
    if error:
        return error
    return None if isinstance(raw, dict) else f"{what} must be a JSON object, got {type(raw).__name__}"
