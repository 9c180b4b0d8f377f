"""BFCL's AST checker, written here: is a model's set of tool calls one of the acceptable answers?

Rules (bfcl_eval `eval_checker/ast_eval/ast_checker.py`, read for the facts), for a function-calling model:
- decoding: each call's arguments must be a JSON object; a call list that does not decode fails
  (`ast_decoder:decoder_failed`, `ast_decoder:decoder_wrong_output_format`);
- routing by category: "parallel" in the name -> order-free matching of every call; "multiple" -> exactly one call,
  checked against the answer's function; otherwise (simple) exactly one call, checked against the first doc;
- one call, in this order: the name (dots of the expected name replaced by underscores, as the model was shown it);
  every required parameter present; no parameter outside the doc or the answer; the type (Python: exact types, an
  int accepted for a float at the top level, list items checked one level deep; Java/JavaScript: the argument
  must be a string, read as the language's literal); the value among the acceptable ones, strings compared after
  `standardize_string`, lists element-wise, dicts key by key; an answer parameter the model left out must list ""
  (optional);
- a value whose acceptable answers are of another type than the doc's (the answer names a variable) is compared
  as is;
- parallel: each expected call, in the answer's order, takes the first still unused model call that passes it
  (greedy, as BFCL does: a matching that needs another assignment order is not searched for).

Relevance categories: `irrelevance`/`live_irrelevance` pass when the output holds no call (no tool call, arguments
that do not decode, or not BFCL's call format); `live_relevance` passes when it holds one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from k2core.eval.bfcl_data import BfclRecord, tool_name
from k2core.eval.bfcl_lang import JAVA_TYPES, JS_TYPES, LIST_TYPES, java_value, js_value

PYTHON_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list, "dict": dict,
    "any": str,
}  # fmt: skip
PYTHON_LIST_TYPES = ("array", "tuple")


class AstVerdict(NamedTuple):
    """The checker's answer: (valid, BFCL's error type, a readable reason). Empty strings when valid."""

    valid: bool
    error_type: str = ""
    reason: str = ""


PASS = AstVerdict(True)


class DecodeError(ValueError):
    """The model's tool calls are not a list of calls with JSON-object arguments."""


def standardize_string(text: str) -> str:
    """BFCL's normal form: no spaces and none of `,./-_*^`, lower case, single quotes made double."""
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def decode_calls(tool_calls: Sequence[Any] | None) -> list[dict[str, Any]]:
    """OpenAI-style tool calls (`{name, arguments}` or `{function: {name, arguments}}`, arguments a JSON string
    or a dict) -> BFCL's decoded form `[{name: arguments}]`. No call at all is a decoding failure, as for BFCL
    (an FC reply without tool calls is text)."""
    if not tool_calls:
        raise DecodeError("the reply has no tool call")
    decoded = []
    for call in tool_calls:
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or "name" not in function:
            raise DecodeError(f"not a tool call: {call!r}")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise DecodeError(f"arguments of {function['name']!r} are not JSON: {exc}") from exc
        decoded.append({function["name"]: arguments})
    return decoded


def is_call_format(decoded: Sequence[Any]) -> bool:
    """BFCL's `[{name: {param: value}}]` shape."""
    return all(isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)
               for item in decoded)  # fmt: skip


def _answer_type(acceptable: Sequence[Any]) -> type | None:
    """The type of the first non-optional acceptable value (None when all are "")."""
    return next((type(value) for value in acceptable if value != ""), None)


class _TypeResult(NamedTuple):
    verdict: AstVerdict
    is_variable: bool


def _check_type(param: str, value: Any, acceptable: Sequence[Any], expected: type, nested: type | None) -> _TypeResult:
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type != expected
    nested_failed = False
    if type(value) is expected:
        if nested is None:
            return _TypeResult(PASS, is_variable)
        for option in acceptable:
            # An option that is not a list (the optional marker "") passes the nested check.
            if not isinstance(option, list) or all(
                _check_type(param, item, option, nested, None).verdict.valid for item in value
            ):
                return _TypeResult(PASS, is_variable)
        nested_failed = True
    if answer_type is not None and type(value) is answer_type:
        if nested_failed:
            reason = f"nested type check failed for {param!r}: items of {value!r} are not {nested.__name__}"
            return _TypeResult(AstVerdict(False, "type_error:nested", reason), True)
        return _TypeResult(PASS, True)
    reason = f"wrong type for {param!r}: expected {expected.__name__}, got {type(value).__name__} ({value!r})"
    return _TypeResult(AstVerdict(False, "type_error:simple", reason), False)


def _std(value: Any) -> Any:
    return standardize_string(value) if type(value) is str else value


def _check_string(param: str, value: str, acceptable: Sequence[Any]) -> AstVerdict:
    if standardize_string(value) in [standardize_string(a) for a in acceptable if type(a) is str]:
        return PASS
    return AstVerdict(False, "value_error:string", f"{param!r}={value!r} is not one of {list(acceptable)}")


def _check_list(param: str, value: list[Any], acceptable: Sequence[Any]) -> AstVerdict:
    # Every option is read as a sequence (the optional marker "" becomes [], so an empty list matches it).
    if [_std(item) for item in value] in [[_std(item) for item in option] for option in acceptable]:
        return PASS
    return AstVerdict(False, "value_error:list/tuple", f"{param!r}={value!r} is not one of {list(acceptable)}")


def _check_dict(param: str, value: dict[str, Any], acceptable: Sequence[Any]) -> AstVerdict:
    verdict = AstVerdict(False, "dict_checker:unclear", f"{param!r}: no acceptable dict")
    for option in acceptable:
        if option == "":
            continue
        verdict = PASS
        for key, item in value.items():
            if key not in option:
                verdict = AstVerdict(False, "value_error:dict_key", f"{param!r}: unexpected key {key!r}")
                break
            if _std(item) not in [_std(a) for a in option[key]]:
                reason = f"{param!r}[{key!r}]={item!r} is not one of {option[key]}"
                verdict = AstVerdict(False, "value_error:dict_value", reason)
                break
        missing = next((key for key, allowed in option.items() if key not in value and "" not in allowed), None)
        if missing is not None:
            verdict = AstVerdict(False, "value_error:dict_key", f"{param!r}: missing key {missing!r}")
        if verdict.valid:
            return PASS
    return verdict


def _check_list_of_dicts(param: str, value: list[Any], acceptable: Sequence[Any]) -> AstVerdict:
    verdict = AstVerdict(False, "list_dict_checker:unclear", f"{param!r}: no acceptable list of dicts")
    for option in acceptable:
        if len(value) != len(option):
            verdict = AstVerdict(False, "value_error:list_dict_count", f"{param!r}: wrong number of dicts")
            continue
        for item, expected in zip(value, option, strict=True):
            verdict = _check_dict(param, item, [expected])
            if not verdict.valid:
                break
        else:
            return PASS
    return verdict


def _convert(language: str, param: str, value: Any, spec: dict[str, Any]) -> tuple[Any, type, type | None]:
    """The value as BFCL compares it, its expected type and the expected item type (None: not a list)."""
    kind = spec["type"]
    if language == "python":
        nested = PYTHON_TYPES[spec["items"]["type"]] if kind in PYTHON_LIST_TYPES and "items" in spec else None
        if kind == "float" and type(value) is int:
            value = float(value)  # Python promotes an int where a float is expected
        return value, PYTHON_TYPES[kind], nested
    types, read = (JAVA_TYPES, java_value) if language == "java" else (JS_TYPES, js_value)
    expected = types[kind]
    if type(value) is not str:
        raise _LanguageTypeError(language, param, value)
    item_kind = spec["items"]["type"] if kind in LIST_TYPES and "items" in spec else None
    nested = types[item_kind] if item_kind is not None else None
    return read(value, kind, item_kind), expected, nested


class _LanguageTypeError(Exception):
    def __init__(self, language: str, param: str, value: Any) -> None:
        short = "java" if language == "java" else "js"
        self.verdict = AstVerdict(
            False, f"type_error:{short}", f"{param!r} must be a {language} string literal, got {value!r}"
        )


def check_call(doc: dict[str, Any], call: dict[str, Any], answer: dict[str, Any], language: str) -> AstVerdict:
    """One decoded call `{name: params}` against one answer `{function: {param: [acceptable]}}`."""
    acceptable_params: dict[str, list[Any]] = next(iter(answer.values()))
    expected_name = tool_name(doc["name"])
    if expected_name not in call:
        return AstVerdict(False, "simple_function_checker:wrong_func_name", f"expected a call to {expected_name!r}")
    params: dict[str, Any] = call[expected_name]
    properties = doc["parameters"].get("properties", {})
    for required in doc["parameters"].get("required", []):
        if required not in params:
            return AstVerdict(False, "simple_function_checker:missing_required", f"missing parameter {required!r}")
    for param, value in params.items():
        if param not in properties or param not in acceptable_params:
            return AstVerdict(False, "simple_function_checker:unexpected_param", f"unexpected parameter {param!r}")
        acceptable = acceptable_params[param]
        try:
            value, expected, nested = _convert(language, param, value, properties[param])
        except _LanguageTypeError as exc:
            return exc.verdict
        verdict, is_variable = _check_type(param, value, acceptable, expected, nested)
        if not verdict.valid:
            return verdict
        if not is_variable:
            if expected is dict:
                checked = _check_dict(param, value, acceptable)
            elif expected is list and nested is dict:
                checked = _check_list_of_dicts(param, value, acceptable)
            elif expected is str:
                checked = _check_string(param, value, acceptable)
            elif expected is list:
                checked = _check_list(param, value, acceptable)
            else:
                checked = None
            if checked is not None:
                if not checked.valid:
                    return checked
                continue
        if value not in acceptable:
            return AstVerdict(False, "value_error:others", f"{param!r}={value!r} is not one of {acceptable}")
    for param, acceptable in acceptable_params.items():
        if param not in params and "" not in acceptable:
            return AstVerdict(False, "simple_function_checker:missing_optional", f"parameter {param!r} is missing")
    return PASS


def _doc(functions: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(doc for doc in functions if doc["name"] == name)


def check_decoded(record: BfclRecord, decoded: list[dict[str, Any]]) -> AstVerdict:
    """Decoded calls against the record's ground truth, routed as BFCL routes by category."""
    answers, language = record.ground_truth, record.language
    if "parallel" in record.category:
        if len(decoded) != len(answers):
            return AstVerdict(False, "parallel_function_checker_no_order:wrong_count",
                              f"{len(decoded)} calls, expected {len(answers)}")  # fmt: skip
        used: set[int] = set()
        for index, answer in enumerate(answers):
            doc = _doc(record.functions, next(iter(answer)))
            match = next((i for i, call in enumerate(decoded)
                          if i not in used and check_call(doc, call, answer, language).valid), None)  # fmt: skip
            if match is None:
                return AstVerdict(False, "parallel_function_checker_no_order:cannot_find_match",
                                  f"no call matches expected call {index} ({next(iter(answer))})")  # fmt: skip
            used.add(match)
        return PASS
    if "multiple" in record.category:
        if len(decoded) != len(answers):
            return AstVerdict(False, "multiple_function_checker:wrong_count",
                              f"{len(decoded)} calls, expected {len(answers)}")  # fmt: skip
        return check_call(_doc(record.functions, next(iter(answers[0]))), decoded[0], answers[0], language)
    if len(decoded) != 1:
        return AstVerdict(False, "simple_function_checker:wrong_count", f"{len(decoded)} calls, expected 1")
    return check_call(record.functions[0], decoded[0], answers[0], language)


def _holds_call(tool_calls: Sequence[Any] | None) -> bool:
    try:
        decoded = decode_calls(tool_calls)
    except DecodeError:
        return False
    return is_call_format(decoded) and bool(decoded) and not (len(decoded) == 1 and not decoded[0])


def check_relevance(record: BfclRecord, tool_calls: Sequence[Any] | None) -> AstVerdict:
    """irrelevance: no call expected; live_relevance: some call expected (its content is not checked)."""
    holds = _holds_call(tool_calls)
    if "irrelevance" in record.category:
        return AstVerdict(False, "irrelevance_error:decoder_success", "called a tool, none is relevant") if holds \
            else PASS
    return PASS if holds else AstVerdict(False, "relevance_error:decoder_failed", "no tool call, one was expected")


def check_ast(record: BfclRecord, tool_calls: Sequence[Any] | None) -> AstVerdict:
    """The verdict on a single-turn record for the model's tool calls (OpenAI format)."""
    if "relevance" in record.category:
        return check_relevance(record, tool_calls)
    try:
        decoded = decode_calls(tool_calls)
    except DecodeError as exc:
        return AstVerdict(False, "ast_decoder:decoder_failed", str(exc))
    if not is_call_format(decoded):
        return AstVerdict(False, "ast_decoder:decoder_wrong_output_format", f"not a list of calls: {decoded!r}")
    return check_decoded(record, decoded)
