"""BFCL v4: our checker against the ground truth, hand-made near-misses, and agreement with bfcl-eval's own checker.

bfcl-eval's code is imported here only, to check agreement; the product (k2core.eval.bfcl*) never imports it.
Its model registry (`bfcl_eval.constants.model_config`) imports every vendor SDK (anthropic, cohere, mistralai,
google-genai, ...), so it is replaced by a one-entry registry for an OpenAI-style FC model (the only field the
checker reads is `underscore_to_dot`); everything else is bfcl-eval's code as shipped (with its light import-time
deps tenacity, overrides and tree-sitter pinned in requirements-dev.txt).
"""

from __future__ import annotations

import copy
import json
import random
import sys
import types
from collections import Counter
from typing import Any

import pytest

from k2core.errors import UserError
from k2core.eval.bfcl import BfclResult, aggregate, score_record
from k2core.eval.bfcl_ast import AstVerdict, check_ast, standardize_string
from k2core.eval.bfcl_data import AST_CATEGORIES, RELEVANCE_CATEGORIES, BfclRecord, load_bfcl, tool_name
from k2core.eval.bfcl_multi_turn import BfclEnvironment, check_multi_turn, parse_call, run_multi_turn
from k2core.llm.base import ChatRequest, ChatResponse, Usage

FC_MODEL = "k2-FC"

# Records no answer can pass under BFCL's rules (our checker and BFCL's both reject the gold answer).
UNREACHABLE = {
    # ArrayList of `any` items: BFCL reads every item as a string, the answer holds 42 and True.
    "simple_java_36": "ArrayList<any> answer with int/bool items",
    "simple_java_65": "ArrayList<any> answer with bool items",
    # A required parameter whose list of acceptable values is empty.
    "live_simple_106-63-0": "required 'auto_loan_payment_start' accepts no value",
    "live_simple_112-68-0": "required 'acc_routing_start' accepts no value",
    # A required parameter whose only acceptable value is "" (omitted), which 'required' forbids.
    "live_multiple_507-149-4": "required 'origin_airport' must be omitted",
    # The answer requires a parameter the function doc does not have.
    "live_multiple_862-181-3": "answer requires 'journey_start_time', absent from the doc",
    "live_multiple_964-207-0": "answer uses 'question', the doc requires 'statement'",
}


# ---------------------------------------------------------------- the gold answer as an FC model would send it

_NO_VALUE = object()


def _first(acceptable: list[Any]) -> Any:
    return next((v for v in acceptable if v != ""), _NO_VALUE)


def _collapse(option: dict[str, list[Any]]) -> dict[str, Any]:
    """{key: [acceptable]} -> {key: first acceptable}, optional-only keys left out."""
    return {k: v for k, vals in option.items() if (v := _first(vals)) is not _NO_VALUE}


def _java_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


_JAVA_PY = {"boolean": bool, "long": int, "float": float, "double": float, "byte": int, "short": int,
            "integer": int, "Array": list, "ArrayList": list, "HashMap": dict}  # fmt: skip
_JS_PY = {"Boolean": bool, "Bigint": int, "integer": int, "float": float, "array": list, "dict": dict}


def _java(value: Any, spec: dict[str, Any]) -> Any:
    kind, item = spec["type"], spec.get("items", {}).get("type")
    if kind in _JAVA_PY and isinstance(value, str):
        return value  # the answer names a variable
    if kind in _JAVA_PY and _JAVA_PY[kind] is bool:
        return _java_literal(value)
    if kind == "long":
        return f"{value}L"
    if kind == "float":
        return f"{float(value)}f"
    if kind == "double":
        return repr(float(value))
    if kind in ("byte", "short", "integer"):
        return str(value)
    if kind == "Array":
        return "new Object[]{%s}" % ", ".join(_java(x, {"type": item}) if item else _java_literal(x) for x in value)
    if kind == "ArrayList":
        parts = [json.dumps(x) if item in ("String", "char") else _java(x, {"type": item}) for x in value]
        return "new ArrayList<>(Arrays.asList(%s))" % ", ".join(parts) if parts else "new ArrayList<>()"
    if kind == "HashMap":
        puts = " ".join(f'put("{k}", {_java_literal(x)});' for k, x in _collapse(value).items())
        return "new HashMap<String, Object>() {{ %s }}" % puts
    return value if isinstance(value, str) else str(value)


def _js_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_js_literal(x) for x in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _js(value: Any, spec: dict[str, Any]) -> Any:
    kind, item = spec["type"], spec.get("items", {}).get("type")
    if kind in _JS_PY and isinstance(value, str):
        return value
    if kind == "Boolean":
        return _js_literal(value)
    if kind == "Bigint":
        return f"{value}n"
    if kind in ("integer", "float"):
        return repr(value)
    if kind == "array":
        return "[" + ", ".join(json.dumps(x) if item == "String" else _js(x, {"type": item}) for x in value) + "]"
    if kind == "dict":
        return "{" + ", ".join(f"{k}: {_js_literal(x)}" for k, x in _collapse(value).items()) + "}"
    return value if isinstance(value, str) else str(value)


def _python(value: Any, spec: dict[str, Any]) -> Any:
    if spec["type"] == "dict" and isinstance(value, dict):
        return _collapse(value)
    if spec.get("items", {}).get("type") == "dict" and isinstance(value, list):
        return [_collapse(x) for x in value]
    return value


def gold_calls(record: BfclRecord) -> list[dict[str, Any]]:
    """The ground truth's first acceptable answer as OpenAI tool calls ({name, arguments JSON})."""
    if record.category in RELEVANCE_CATEGORIES:
        # irrelevance: no call; live_relevance: any call of an offered function
        return [] if "irrelevance" in record.category else [{"name": record.tools[0]["function"]["name"],
                                                             "arguments": "{}"}]  # fmt: skip
    docs = {d["name"]: d for d in record.functions}
    encode = {"python": _python, "java": _java, "javascript": _js}[record.language]
    calls = []
    for answer in record.ground_truth:
        ((name, params),) = answer.items()
        properties = docs[name]["parameters"]["properties"]
        args = {p: encode(v, properties[p]) for p, acceptable in params.items()
                if (v := _first(acceptable)) is not _NO_VALUE and p in properties}  # fmt: skip
        calls.append({"name": tool_name(name), "arguments": json.dumps(args)})
    return calls


# ---------------------------------------------------------------- bfcl-eval's own checker (agreement only)


@pytest.fixture(scope="module")
def bfcl_reference():
    """bfcl-eval's single-entry evaluators, with a one-entry model registry (see the module docstring)."""
    registry = types.ModuleType("bfcl_eval.constants.model_config")
    registry.MODEL_CONFIG_MAPPING = {FC_MODEL: types.SimpleNamespace(underscore_to_dot=True, is_fc_model=True)}
    saved = sys.modules.get(registry.__name__)
    sys.modules[registry.__name__] = registry
    from bfcl_eval.eval_checker import eval_runner
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    yield types.SimpleNamespace(runner=eval_runner, multi_turn_checker=multi_turn_checker)
    if saved is None:
        sys.modules.pop(registry.__name__, None)
    else:
        sys.modules[registry.__name__] = saved


class _FcDecoder:
    """The decoding of bfcl-eval's OpenAI handler in FC mode (`decode_ast`): [{name: json.loads(arguments)}].
    (The handler module itself imports the `openai` SDK, which bfcl-eval does not need for checking.)"""

    def decode_ast(self, result: Any, language: Any, has_tool_call_tag: bool) -> list[dict[str, Any]]:
        return [{name: json.loads(arguments)} for call in result for name, arguments in call.items()]


def bfcl_verdict(ref: types.SimpleNamespace, record: BfclRecord, calls: list[dict[str, Any]]) -> tuple[bool, str]:
    """bfcl-eval's verdict on our tool calls, given as its FC handler records them (text when there is none)."""
    runner = ref.runner
    model_result: Any = [{c["name"]: c["arguments"]} for c in calls] if calls else "I cannot help with that."
    prompt = {"id": record.id, "function": copy.deepcopy(record.functions)}
    if record.category in RELEVANCE_CATEGORIES:
        out = runner._evaluate_single_relevance_entry(_FcDecoder(), record.id, model_result, prompt, FC_MODEL,
                                                      record.category)  # fmt: skip
    else:
        language = runner.Language(record.language)
        out = runner._evaluate_single_ast_entry(_FcDecoder(), record.id, model_result,
                                                copy.deepcopy(record.ground_truth), prompt, FC_MODEL,
                                                record.category, language, runner.ReturnFormat.PYTHON)  # fmt: skip
    return out["valid"], out.get("error_type", "")


@pytest.fixture(scope="module")
def single_turn() -> list[BfclRecord]:
    return load_bfcl(AST_CATEGORIES + RELEVANCE_CATEGORIES)


# ---------------------------------------------------------------- data and tools


def test_categories_load_with_their_ground_truth(single_turn: list[BfclRecord]) -> None:
    sizes = Counter(r.category for r in single_turn)
    assert sizes == {"simple_python": 400, "simple_java": 100, "simple_javascript": 50, "multiple": 200,
                     "parallel": 200, "parallel_multiple": 200, "irrelevance": 240, "live_simple": 258,
                     "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
                     "live_irrelevance": 884, "live_relevance": 16}  # fmt: skip
    assert all(r.ground_truth for r in single_turn if r.category in AST_CATEGORIES)
    subset = load_bfcl(["parallel", "simple_java"], limit=5, seed=3)
    assert [r.id for r in subset] == [r.id for r in load_bfcl(["parallel", "simple_java"], limit=5, seed=3)]
    assert Counter(r.category for r in subset) == {"parallel": 5, "simple_java": 5}
    assert [r.id for r in subset] != [r.id for r in load_bfcl(["parallel", "simple_java"], limit=5, seed=4)]
    with pytest.raises(UserError, match="unknown BFCL categories.*'simple'"):
        load_bfcl(["simple"])


def test_tools_are_what_bfcl_sends_an_fc_model(single_turn: list[BfclRecord], bfcl_reference) -> None:
    """Every record's tools equal bfcl-eval's own conversion (language hints, Java/JS strings, type mapping, dots)."""
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool
    from bfcl_eval.utils import _func_doc_language_specific_pre_processing

    records = single_turn + load_bfcl(["multi_turn_base"])
    for record in records:
        docs = _func_doc_language_specific_pre_processing(copy.deepcopy(record.functions), record.category)
        assert record.tools == convert_to_tool(docs, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS), record.id
    java = next(r for r in single_turn if r.id == "simple_java_1").tools[0]["function"]
    assert java["name"] == "SQLCompletionAnalyzer_makeProposalsFromObject"
    assert {p["type"] for p in java["parameters"]["properties"].values()} == {"string"}


# ---------------------------------------------------------------- the oracle


def test_gold_answers_pass_every_reachable_record(single_turn: list[BfclRecord], bfcl_reference) -> None:
    failed = {r.id: check_ast(r, gold_calls(r)) for r in single_turn if not check_ast(r, gold_calls(r)).valid}
    assert set(failed) == set(UNREACHABLE), {k: v for k, v in failed.items() if k not in UNREACHABLE}
    by_id = {r.id: r for r in single_turn}
    for record_id in UNREACHABLE:  # bfcl-eval rejects them too
        assert bfcl_verdict(bfcl_reference, by_id[record_id], gold_calls(by_id[record_id]))[0] is False


# ---------------------------------------------------------------- near-misses


def _record(records: list[BfclRecord], record_id: str) -> BfclRecord:
    return next(r for r in records if r.id == record_id)


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": json.dumps(arguments)}


def test_near_misses_score_as_bfcl_scores_them(single_turn: list[BfclRecord], bfcl_reference) -> None:
    simple = _record(single_turn, "simple_python_0")  # calculate_triangle_area(base=10, height=5, unit='units'|"")
    parallel = _record(single_turn, "parallel_0")  # spotify.play x2: (Taylor Swift, 20), (Maroon 5, 15)
    taylor = _call("spotify_play", artist="Taylor Swift", duration=20)
    maroon = _call("spotify_play", artist="Maroon 5", duration=15)
    cases = [
        (simple, [_call("calculate_triangle_area", base=10, height=5)], True, ""),  # optional left out
        (simple, [_call("calculate_triangle_area", base="10", height=5)], False, "type_error:simple"),
        (simple, [_call("calculate_triangle_area", base=10.0, height=5)], False, "type_error:simple"),
        (simple, [_call("calculate_triangle_area", height=5)], False, "simple_function_checker:missing_required"),
        (simple, [_call("calculate_triangle_area", base=10, height=5, color="red")], False,
         "simple_function_checker:unexpected_param"),
        (simple, [_call("calculate_triangle_area", base=11, height=5)], False, "value_error:others"),
        (simple, [_call("calculate_triangle_area", base=10, height=5, unit="cm")], False, "value_error:string"),
        (simple, [_call("calculate_triangle_area", base=10, height=5, unit=" U-n_i.T*S ")], True, ""),
        (simple, [_call("triangle_area", base=10, height=5)], False, "simple_function_checker:wrong_func_name"),
        (simple, [], False, "ast_decoder:decoder_failed"),
        (parallel, [taylor, maroon], True, ""),
        (parallel, [maroon, taylor], True, ""),  # order-free
        (parallel, [taylor], False, "parallel_function_checker_no_order:wrong_count"),
        (parallel, [taylor, taylor], False, "parallel_function_checker_no_order:cannot_find_match"),
        (parallel, [_call("spotify.play", artist="Taylor Swift", duration=20), maroon], False,
         "parallel_function_checker_no_order:cannot_find_match"),  # the dotted name is not the tool's name
    ]  # fmt: skip
    for record, calls, valid, error_type in cases:
        verdict = check_ast(record, calls)
        assert (verdict.valid, verdict.error_type) == (valid, error_type), (record.id, calls, verdict)
        assert bfcl_verdict(bfcl_reference, record, calls) == (valid, error_type), (record.id, calls)


def test_float_int_and_java_js_literals(single_turn: list[BfclRecord]) -> None:
    java = _record(single_turn, "simple_java_1")  # useShortName boolean, params HashMap {limit: 50, ...}
    args = {"object": "Customers", "useShortName": "true",
            "params": 'new HashMap<String, Object>() {{ put("limit", 50); put("schemaFilter", "public"); }}'}
    name = "SQLCompletionAnalyzer_makeProposalsFromObject"
    assert check_ast(java, [_call(name, **args)]).valid
    assert check_ast(java, [_call(name, **{**args, "useShortName": True})]).error_type == "type_error:java"
    assert check_ast(java, [_call(name, **{**args, "useShortName": "True"})]).error_type == "type_error:simple"
    js = _record(single_turn, "simple_javascript_0")  # inputField String, isComplete Boolean
    assert check_ast(js, [_call("validateUserInput", inputField="'userInputField'", isComplete="true")]).valid
    assert check_ast(js, [_call("validateUserInput", inputField="userInputField", isComplete=1)]).error_type == (
        "type_error:js"
    )
    sushi = _record(single_turn, "simple_python_362")  # review_rate float, acceptable [4.0]; top integer [5]
    assert check_ast(sushi, [_call("get_best_sushi_places", city="Tokyo", top=5, review_rate=4)]).valid
    assert check_ast(sushi, [_call("get_best_sushi_places", city="Tokyo", top=5.0, review_rate=4.0)]).error_type == (
        "type_error:simple"
    )


def test_standardize_string() -> None:
    assert standardize_string("April 1, 2024") == standardize_string("april 1,2024") == "april12024"
    assert standardize_string("New-York_City.*^/") == "newyorkcity"
    assert standardize_string("it's") == 'it"s'
    assert standardize_string("São Paulo") == "sãopaulo"


def test_relevance_categories(single_turn: list[BfclRecord]) -> None:
    irrelevant = next(r for r in single_turn if r.category == "irrelevance")
    relevant = next(r for r in single_turn if r.category == "live_relevance")
    some_call = [_call(irrelevant.tools[0]["function"]["name"])]
    assert check_ast(irrelevant, []).valid and check_ast(irrelevant, None).valid
    assert check_ast(irrelevant, [{"name": "f", "arguments": "{not json"}]).valid  # does not decode: no call
    assert check_ast(irrelevant, some_call) == AstVerdict(False, "irrelevance_error:decoder_success",
                                                          "called a tool, none is relevant")  # fmt: skip
    assert check_ast(relevant, [_call(relevant.tools[0]["function"]["name"])]).valid
    assert check_ast(relevant, []).error_type == "relevance_error:decoder_failed"


# ---------------------------------------------------------------- agreement with bfcl-eval on mutated answers


def _mutate_value(value: Any, rng: random.Random, kind: str) -> Any:
    if kind == "type":
        if isinstance(value, bool):
            return "yes"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, str):
            return 7 if rng.random() < 0.5 else [value]
        return json.dumps(value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + rng.choice([1, 2.5])
    if isinstance(value, str):
        return rng.choice([value + " extra", value.upper(), value[:-1], "true" if value == "false" else value + "9"])
    if isinstance(value, list):
        return value[:-1] if value and rng.random() < 0.5 else [*value, value[0] if value else 1]
    if isinstance(value, dict) and value:
        return {k: v for i, (k, v) in enumerate(value.items()) if i}
    return value


def mutate(calls: list[dict[str, Any]], rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """A seeded near-miss of a gold answer (some of which still pass: swapped order, case, int for float)."""
    calls = [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in calls]
    kinds = ["drop_param", "extra_param", "type", "value", "drop_call", "dup_call", "rename", "swap", "bad_json",
             "int_for_float", "null"]  # fmt: skip
    kind = rng.choice(kinds)
    if not calls:
        return "add_call", [{"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}]
    target = rng.choice(calls)
    params = list(target["arguments"])
    if kind == "drop_param" and params:
        del target["arguments"][rng.choice(params)]
    elif kind == "extra_param":
        target["arguments"]["verbose"] = True
    elif kind in ("type", "value") and params:
        p = rng.choice(params)
        target["arguments"][p] = _mutate_value(target["arguments"][p], rng, kind)
    elif kind == "drop_call":
        calls.remove(target)
    elif kind == "dup_call":
        calls.append(copy.deepcopy(target))
    elif kind == "rename":
        target["name"] += "_v2"
    elif kind == "swap":
        calls.reverse()
    elif kind == "int_for_float":
        target["arguments"] = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                               for k, v in target["arguments"].items()}  # fmt: skip
    elif kind == "null" and params:
        target["arguments"][rng.choice(params)] = None
    encoded = [{"name": c["name"], "arguments": json.dumps(c["arguments"])} for c in calls]
    if kind == "bad_json":
        encoded[0]["arguments"] = encoded[0]["arguments"][:-1]
    return kind, encoded


def test_agreement_with_bfcl_checker(single_turn: list[BfclRecord], bfcl_reference) -> None:
    """Our (valid, error_type) equals bfcl-eval's on every gold answer and seeded mutations of it."""
    rng = random.Random(20260323)
    by_category: dict[str, list[BfclRecord]] = {}
    for record in single_turn:
        by_category.setdefault(record.category, []).append(record)
    pairs = []
    for category, records in sorted(by_category.items()):
        for record in rng.sample(records, min(len(records), 40)):
            gold = gold_calls(record)
            pairs.append((record, "gold", gold))
            for _ in range(2):
                pairs.append((record, *mutate(gold, rng)))
    disagreements = []
    outcomes: Counter[tuple[str, bool]] = Counter()
    for record, kind, calls in pairs:
        ours = check_ast(record, calls)
        theirs = bfcl_verdict(bfcl_reference, record, calls)
        outcomes[(kind, ours.valid)] += 1
        if (ours.valid, ours.error_type) != theirs:
            disagreements.append((record.id, kind, calls, ours, theirs))
    rate = 1 - len(disagreements) / len(pairs)
    print(f"BFCL AST agreement: {rate:.4f} on {len(pairs)} pairs; outcomes {sorted(outcomes.items())}")
    assert len(pairs) >= 300 and sum(not valid for (_, valid) in outcomes.elements()) >= 300
    assert not disagreements, disagreements[:5]


# ---------------------------------------------------------------- multi-turn


class GoldReplay:
    """A backend that answers each turn with the ground truth's calls (one reply), then a text reply."""

    backend_id = "bfcl-gold-replay"

    def __init__(self, record: BfclRecord, skip: tuple[int, int] | None = None) -> None:
        env = BfclEnvironment(record)
        self.replies: list[dict[str, Any]] = []
        for turn, sources in enumerate(record.ground_truth):
            calls = []
            for index, source in enumerate(sources):
                if (turn, index) == skip:
                    continue
                name, args, kwargs = parse_call(source)
                arguments = env.signature(name).bind(*args, **kwargs).arguments
                calls.append({"id": f"functions.{name}:{index}", "type": "function",
                              "function": {"name": name, "arguments": json.dumps(dict(arguments))}})  # fmt: skip
            if calls:
                self.replies.append({"role": "assistant", "content": "", "tool_calls": calls})
            self.replies.append({"role": "assistant", "content": "Done."})
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return ChatResponse(message=self.replies.pop(0), usage=Usage(prompt_tokens=1, completion_tokens=1))


def _as_bfcl_steps(turns: list[list[list[tuple[str, dict[str, Any]]]]]) -> list[list[list[str]]]:
    """Our recorded calls in bfcl-eval's decoded form (`convert_to_function_call`: name(k=repr(v),...))."""
    return [[[f"{name}({','.join(f'{k}={v!r}' for k, v in kwargs.items())})" for name, kwargs in step]
             for step in steps] for steps in turns]  # fmt: skip


def test_multi_turn_gold_replay_passes_and_a_skipped_call_fails(bfcl_reference) -> None:
    records = load_bfcl(["multi_turn_base"], limit=40, seed=0)
    skipped = 0
    for n, record in enumerate(records):
        backend = GoldReplay(record)
        episode = run_multi_turn(record, backend)
        assert episode.verdict.valid, (record.id, episode.verdict)
        assert [m["content"] for m in episode.messages if m["role"] == "user"] == [
            m["content"] for turn in record.turns for m in turn]  # fmt: skip
        assert backend.requests[0].tools == record.tools and not backend.replies
        theirs = bfcl_reference.multi_turn_checker(_as_bfcl_steps(episode.turns), record.ground_truth,
                                                   _bfcl_entry(record), record.category, f"gold{n}")  # fmt: skip
        assert theirs["valid"], (record.id, theirs)
        turn, index = next((t, i) for t, calls in enumerate(record.ground_truth) for i, _ in enumerate(calls))
        if len(record.ground_truth[turn]) < 2:
            continue
        episode = run_multi_turn(record, GoldReplay(record, skip=(turn, index)))
        theirs = bfcl_reference.multi_turn_checker(_as_bfcl_steps(episode.turns), record.ground_truth,
                                                   _bfcl_entry(record), record.category, f"skip{n}")  # fmt: skip
        assert not episode.verdict.valid, record.id
        assert (episode.verdict.valid, episode.verdict.error_type) == (theirs["valid"], theirs["error_type"])
        skipped += 1
    assert skipped >= 10


def _bfcl_entry(record: BfclRecord) -> dict[str, Any]:
    return {"id": record.id, "initial_config": copy.deepcopy(record.initial_config),
            "involved_classes": list(record.involved_classes)}  # fmt: skip


def test_multi_turn_silent_model_and_turn_count(bfcl_reference) -> None:
    record = load_bfcl(["multi_turn_base"], limit=1, seed=1)[0]

    class Silent:
        backend_id = "silent"

        def complete(self, request: ChatRequest) -> ChatResponse:
            return ChatResponse(message={"role": "assistant", "content": "No."}, usage=Usage(prompt_tokens=1,
                                                                                              completion_tokens=1))

    episode = run_multi_turn(record, Silent())
    assert episode.verdict.error_type == "multi_turn:empty_turn_model_response"
    assert len(episode.turns) == len(record.ground_truth)
    assert check_multi_turn(record, episode.turns[:-1]).error_type == "multi_turn:force_terminated"


# ---------------------------------------------------------------- scoring against a backend, aggregation


def test_score_record_asks_the_backend_with_the_tools(single_turn: list[BfclRecord]) -> None:
    record = _record(single_turn, "parallel_0")

    class Answers:
        backend_id = "answers"

        def complete(self, request: ChatRequest) -> ChatResponse:
            assert request.tools == record.tools and request.messages == record.messages
            calls = [{"id": f"functions.spotify_play:{i}", "type": "function", "function": c}
                     for i, c in enumerate(reversed(gold_calls(record)))]  # fmt: skip
            return ChatResponse(message={"role": "assistant", "content": "", "tool_calls": calls},
                                usage=Usage(prompt_tokens=1, completion_tokens=1))  # fmt: skip

    assert score_record(record, Answers()) == BfclResult("parallel_0", "parallel", True)


def test_aggregate_follows_bfcl_groups() -> None:
    def results(category: str, passed: int, total: int) -> list[BfclResult]:
        return [BfclResult(f"{category}_{i}", category, i < passed) for i in range(total)]

    summary = aggregate(
        results("simple_python", 3, 4) + results("simple_java", 1, 2) + results("simple_javascript", 0, 1)
        + results("multiple", 1, 1) + results("parallel", 1, 2) + results("parallel_multiple", 0, 1)
        + results("live_simple", 1, 1) + results("live_multiple", 1, 3) + results("live_parallel", 0, 0)
        + results("live_parallel_multiple", 1, 1) + results("irrelevance", 1, 1)
        + results("live_irrelevance", 1, 2) + results("live_relevance", 2, 2) + results("multi_turn_base", 1, 4)
    )  # fmt: skip
    simple = (0.75 + 0.5 + 0.0) / 3
    assert summary.scores["simple"] == pytest.approx(simple)
    assert summary.scores["non_live"] == pytest.approx((simple + 1 + 0.5 + 0) / 4)
    # live_parallel was not run: 0 over its full 16 entries, as BFCL weighs it
    assert summary.scores["live"] == pytest.approx((1 + 1 + 0 + 1) / (1 + 3 + 16 + 1))
    assert summary.scores["irrelevance"] == pytest.approx(0.75) and summary.scores["relevance"] == 1.0
    assert summary.scores["multi_turn"] == pytest.approx(0.25 / 4)
    overall = (summary.scores["non_live"] + summary.scores["live"] + 0.75) * 0.1 + summary.scores["multi_turn"] * 0.3
    assert summary.scores["overall"] == pytest.approx(overall)
    assert "live_parallel" in summary.missing and "memory_kv" in summary.missing
    assert "simple_python" not in summary.missing


# ---------------------------------------------------------------- the harness tasks


class GoldBackend:
    """Answers any single-turn BFCL record from its ground truth (found by its first message)."""

    backend_id = "bfcl-gold"

    def __init__(self, records: list[BfclRecord]) -> None:
        self.records = {json.dumps(r.messages[0]): r for r in records}

    def complete(self, request: ChatRequest) -> ChatResponse:
        record = self.records[json.dumps(request.messages[0])]
        calls = [{"id": f"functions.{c['name']}:{i}", "type": "function", "function": c}
                 for i, c in enumerate(gold_calls(record))]  # fmt: skip
        message = {"role": "assistant", "content": "", **({"tool_calls": calls} if calls else {})}
        return ChatResponse(message=message, usage=Usage(prompt_tokens=1, completion_tokens=1))


class EpisodesReplay:
    """Replays multi-turn records one after the other, in the order given (some share a first message)."""

    backend_id = "bfcl-gold-episodes"

    def __init__(self, records: list[BfclRecord]) -> None:
        self.pending = [GoldReplay(r) for r in records]

    def complete(self, request: ChatRequest) -> ChatResponse:
        if not self.pending[0].replies:
            self.pending.pop(0)
        return self.pending[0].complete(request)


def test_harness_tasks_score_the_gold_backend(single_turn: list[BfclRecord], tmp_path) -> None:
    from k2core.eval.harness import TaskOptions, run_task
    from k2core.eval.registry import build_tasks

    single, multi = build_tasks(["bfcl", "bfcl_multi_turn"], TaskOptions(limit=60, seed=0))
    assert len(single.samples) == 60 and len(multi.samples) == 60
    unreachable = sum(s.id in UNREACHABLE for s in single.samples)
    result = run_task(single, GoldBackend(single_turn), tmp_path, progress=False)
    assert result.metrics["accuracy"].value == pytest.approx(1 - unreachable / 60)
    by_id = {r.id: r for r in load_bfcl(["multi_turn_base"])}
    replay = EpisodesReplay([by_id[s.id] for s in multi.samples])
    assert run_task(multi, replay, tmp_path, progress=False).metrics["accuracy"].value == 1.0
    lines = [json.loads(line) for line in (tmp_path / "bfcl.samples.jsonl").read_text().splitlines()]
    assert {line["group"] for line in lines} >= {"live_multiple", "simple_python"}


def test_bfcl_task_reports_each_category_and_the_leaderboard_groups_as_bfcl_aggregates(tmp_path) -> None:
    """Per-category and group figures equal `aggregate` over the per-sample verdicts; a group is reported only
    when the subset has all its categories; a refused sample fails in its own category."""
    from k2core.eval.bfcl_task import bfcl_task, metrics
    from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Task, TaskOptions, run_task

    cats = ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
            "live_relevance", "irrelevance"]
    passed = {c: [True, False, True][: 1 + i % 3] for i, c in enumerate(cats)}  # 1-3 samples, mixed verdicts
    samples = [Sample(id=f"{c}/{j}", input=[{"role": "user", "content": "q"}], metadata={"category": c})
               for c in cats for j in range(len(passed[c]))]
    verdict = {s.id: passed[s.metadata["category"]][int(s.id.split("/")[1])] for s in samples}

    def score(sample: Sample, output: Output) -> Score:
        return Score(value=float(verdict[sample.id]), group=sample.metadata["category"])

    task = Task("bfcl", samples, GenerateSolver(4), score, metrics(samples))
    result = run_task(task, Constant(), tmp_path, progress=False, resamples=50)
    expected = aggregate(BfclResult(i, i.split("/")[0], v) for i, v in verdict.items()).scores
    got = {k: v.value for k, v in result.metrics.items()}
    assert set(got) == {"accuracy", "macro_accuracy", *(f"category/{c}" for c in cats), "simple", "non_live",
                        "relevance"}  # irrelevance (the group) needs live_irrelevance too
    assert {c: got[f"category/{c}"] for c in cats} == pytest.approx({c: sum(v) / len(v) for c, v in passed.items()})
    assert {g: got[g] for g in ("simple", "non_live", "relevance")} == pytest.approx(
        {g: expected[g] for g in ("simple", "non_live", "relevance")})
    assert got["non_live"] == pytest.approx(((1 + 0.5 + 2 / 3) / 3 + 1 + 0.5 + 2 / 3) / 4)  # by hand
    real = bfcl_task(TaskOptions(limit=5, seed=0))
    refused = real.refusal(real.samples[0], Output(error="too long"))
    assert (refused.value, refused.group) == (0.0, real.samples[0].metadata["category"])


class Constant:
    backend_id = "constant"

    def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(message={"role": "assistant", "content": "ok"}, usage=Usage(prompt_tokens=1,
                                                                                         completion_tokens=1))
