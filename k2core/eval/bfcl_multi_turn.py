"""BFCL multi-turn: an agent loop against BFCL's stateful environments, and BFCL's state and response checks.

The environments are the benchmark's own Python classes (GorillaFileSystem, TwitterAPI, MathAPI, ... in
`bfcl_eval/eval_checker/multi_turn_eval/func_source_code/`), used like data: each record's `initial_config` is
loaded into fresh instances (`_load_scenario`). Calls are executed on them here (no `eval`).

Rules followed (bfcl_eval `multi_turn_checker.py`, `multi_turn_utils.py`, `base_handler.py`, read for the facts):
- inference: each turn's user messages are added, then the model is asked again and again; every call of a reply
  is executed and its result fed back as a tool message; a reply without calls (or whose calls do not decode)
  ends the turn. After more than 20 steps with calls the episode is force-terminated.
- a result is the method's return value: a string as is, a dict as JSON (its str() if JSON fails), anything else
  str(); an exception becomes "Error during execution: <message>".
- checking re-executes the model's calls on fresh instances, turn by turn, next to the ground-truth calls on
  their own instances. A turn count different from the ground truth's fails (force-terminated); a turn with
  expected calls and none from the model fails; after each turn with expected calls, every public attribute of
  every ground-truth instance must equal the model instance's (state check), and the ground truth's results of
  this turn must all appear (as a multiset, any order) among the model's results of all turns so far (response
  check).
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from k2core.eval.bfcl_ast import AstVerdict, DecodeError, decode_calls, is_call_format
from k2core.eval.bfcl_data import BfclRecord
from k2core.llm.base import ChatBackend, ChatRequest

MAX_STEPS = 20  # BFCL's MAXIMUM_STEP_LIMIT: a turn may run this many steps with calls, the next one force-quits
_ENV_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_ENV_MODULES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
_STATELESS = ("MathAPI",)

Call = tuple[str, dict[str, Any]]  # (function name, keyword arguments)


class BfclEnvironment:
    """Fresh instances of a record's classes, and the method table a call's name resolves through."""

    def __init__(self, record: BfclRecord) -> None:
        long_context = "long_context" in record.category
        self.instances: dict[str, Any] = {}
        self._methods: dict[str, Callable[..., Any]] = {}
        for class_name in record.involved_classes:
            module = importlib.import_module(f"{_ENV_PACKAGE}.{_ENV_MODULES[class_name]}")
            instance = getattr(module, class_name)()
            if class_name not in _STATELESS:
                config = copy.deepcopy(record.initial_config.get(class_name, {}))
                instance._load_scenario(config, long_context=long_context)
            self.instances[class_name] = instance
            for name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not name.startswith("_"):
                    self._methods[name] = method  # a later class's method of the same name wins, as in BFCL

    def signature(self, name: str) -> inspect.Signature:
        return inspect.signature(self._methods[name])

    def execute(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
        """One call's result, as BFCL records it."""
        if name not in self._methods:
            return f"Error during execution: name '{name}' is not defined"
        # Fresh argument objects per execution, as BFCL's eval of the call's text makes: a method may keep and
        # later mutate a list it was given (TwitterAPI stores `mentions`), which must not reach the caller's copy.
        args, kwargs = copy.deepcopy(list(args)), copy.deepcopy(kwargs or {})
        try:
            result = self._methods[name](*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failing call is a result the model reads
            return f"Error during execution: {exc}"
        if isinstance(result, str):
            return result
        if isinstance(result, dict):
            try:
                return json.dumps(result)
            except (TypeError, ValueError):
                return str(result)
        return str(result)

    def execute_source(self, source: str) -> str:
        """A ground-truth call written as Python (`cd(folder='document')`, `sort('final_report.pdf')`)."""
        name, args, kwargs = parse_call(source)
        return self.execute(name, args, kwargs)


def parse_call(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """A ground-truth call string -> (name, positional args, keyword args); arguments must be literals."""
    node = ast.parse(source.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {source!r}")
    args = [ast.literal_eval(arg) for arg in node.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    return node.func.id, args, kwargs


def _state_mismatch(model: BfclEnvironment, gold: BfclEnvironment) -> str | None:
    for class_name, gold_instance in gold.instances.items():
        model_instance = model.instances[class_name]
        for attr, value in vars(gold_instance).items():
            if not attr.startswith("_") and getattr(model_instance, attr) != value:
                return f"{class_name}.{attr} differs from the ground truth's"
    return None


def _missing_results(expected: list[str], produced: list[str]) -> list[str]:
    pool = list(produced)
    missing = []
    for item in expected:
        if item in pool:
            pool.remove(item)
        else:
            missing.append(item)
    return missing


def check_multi_turn(record: BfclRecord, turns: Sequence[Sequence[Sequence[Call]]]) -> AstVerdict:
    """The verdict on the model's calls: `turns[t]` lists the steps of turn t, each the calls of one reply."""
    gold_turns: list[list[str]] = record.ground_truth
    if len(turns) != len(gold_turns):
        return AstVerdict(False, "multi_turn:force_terminated", f"{len(turns)} turns, expected {len(gold_turns)}")
    model, gold = BfclEnvironment(record), BfclEnvironment(record)
    all_results: list[str] = []
    for index, (steps, gold_calls) in enumerate(zip(turns, gold_turns, strict=True)):
        steps = [step for step in steps if step]
        for step in steps:
            all_results.extend(model.execute(name, (), kwargs) for name, kwargs in step)
        gold_results = [gold.execute_source(call) for call in gold_calls]
        if not gold_calls:
            continue
        if not steps:
            return AstVerdict(False, "multi_turn:empty_turn_model_response", f"no call in turn {index}")
        mismatch = _state_mismatch(model, gold)
        if mismatch:
            return AstVerdict(False, "multi_turn:instance_state_mismatch", f"turn {index}: {mismatch}")
        missing = _missing_results(gold_results, all_results)
        if missing:
            reason = f"turn {index}: expected results not produced: {missing[:3]}"
            return AstVerdict(False, "multi_turn:execution_response_mismatch", reason)
    return AstVerdict(True)


@dataclass
class MultiTurnEpisode:
    """What the model did: its calls per turn and step (for the checker), the whole conversation, the verdict."""

    turns: list[list[list[Call]]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    verdict: AstVerdict = AstVerdict(False, "multi_turn:not_run", "")


def _step_calls(message: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]] | None:
    """(call id, name, kwargs) of a reply's calls; None when there is none or they do not decode."""
    raw = message.get("tool_calls") or []
    try:
        decoded = decode_calls(raw)
    except DecodeError:
        return None
    if not is_call_format(decoded):
        return None
    return [(call.get("id", ""), *next(iter(d.items()))) for call, d in zip(raw, decoded, strict=True)]


def run_multi_turn(record: BfclRecord, backend: ChatBackend, max_tokens: int = 1024, seed: int = 0) -> MultiTurnEpisode:
    """Play one multi-turn record with `backend` as the agent (greedy), then check it as BFCL does."""
    env = BfclEnvironment(record)
    episode = MultiTurnEpisode()
    for turn_messages in record.turns:
        episode.messages.extend(turn_messages)
        steps: list[list[Call]] = []
        episode.turns.append(steps)
        force_quit = False
        while True:
            request = ChatRequest(messages=list(episode.messages), tools=record.tools, max_tokens=max_tokens, seed=seed)
            message = backend.complete(request).message
            episode.messages.append(message)
            calls = _step_calls(message)
            if not calls:
                break
            steps.append([(name, kwargs) for _, name, kwargs in calls])
            for call_id, name, kwargs in calls:
                result = env.execute(name, (), kwargs)
                episode.messages.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": result})
            if len(steps) > MAX_STEPS:
                force_quit = True
                break
        if force_quit:
            break
    episode.verdict = check_multi_turn(record, episode.turns)
    return episode
