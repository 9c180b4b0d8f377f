"""Environments, tool specs and the seeded fault injector."""

import json

import jsonschema
import pytest

from k2core.agentic.domains import ENVIRONMENTS, make_env
from k2core.agentic.faults import EDGE_WRITE_MESSAGE, TRANSIENT_MESSAGE, FaultInjector
from k2core.agentic.specs import NAME_PATTERN, argument_error, validate_spec, validate_specs

ENV_NAMES = sorted(ENVIRONMENTS)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_specs_are_valid_json_schema_with_unique_names(name):
    env = make_env(name)
    specs = env.tool_specs()
    names = [s["function"]["name"] for s in specs]
    assert len(set(names)) == len(names) >= 6
    for spec in specs:
        assert NAME_PATTERN.match(spec["function"]["name"])
        jsonschema.validators.validator_for(spec["function"]["parameters"]).check_schema(spec["function"]["parameters"])
    validate_specs(specs)
    kinds = {t.kind for t in env.tools.values()}
    assert kinds == {"read", "write"}
    assert all(t.verify is not None for t in env.tools.values() if t.kind == "write")


def test_spec_lint_rejects_bad_specs():
    good = make_env("retail").tool_specs()[0]
    dotted = json.loads(json.dumps(good))
    dotted["function"]["name"] = "a.b"
    with pytest.raises(ValueError, match="no dots"):
        validate_spec(dotted)
    untyped = json.loads(json.dumps(good))
    untyped["function"]["parameters"]["properties"]["email"] = {"description": "x"}
    with pytest.raises(ValueError, match="no 'type'"):
        validate_spec(untyped)
    half_typed = json.loads(json.dumps(good))
    half_typed["function"]["parameters"]["properties"]["email"] = {"anyOf": [{"type": "string"}, {"description": "x"}]}
    with pytest.raises(ValueError, match="no 'type'"):
        validate_spec(half_typed)
    bad_required = json.loads(json.dumps(good))
    bad_required["function"]["parameters"]["required"] = ["nope"]
    with pytest.raises(ValueError, match="not in properties"):
        validate_spec(bad_required)
    with pytest.raises(ValueError, match="duplicate"):
        validate_specs([good, good])


def test_optional_parameters_written_as_typed_unions_are_accepted():
    """MCP servers (e.g. mcp-server-git) declare optional parameters as `anyOf: [string, null]`."""
    spec = json.loads(json.dumps(make_env("retail").tool_specs()[0]))
    spec["function"]["parameters"]["properties"]["since"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    validate_spec(spec)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_reset_is_deterministic_by_seed(name):
    a, b = make_env(name), make_env(name)
    a.reset(7)
    b.reset(7)
    assert a.db == b.db and a.db_hash() == b.db_hash()
    b.reset(8)
    assert a.db_hash() != b.db_hash()


def test_step_turns_every_failure_into_an_error_string():
    env = make_env("retail")
    env.reset(0)
    assert env.step({"name": "nope", "arguments": {}}).startswith("Error: unknown tool")
    assert env.step({"name": "get_order_details", "arguments": "{not json"}).startswith("Error: invalid arguments")
    assert env.step({"name": "get_order_details", "arguments": {}}).startswith("Error: invalid arguments")
    assert env.step({"name": "get_order_details", "arguments": {"order_id": 5}}).startswith("Error: invalid arguments")
    assert env.step({"name": "get_order_details", "arguments": {"order_id": "O0"}}) == "Error: order O0 not found"
    assert env.step({"name": "set_item_quantity", "arguments": {"order_id": "O0", "product_id": "P1", "quantity": 99}}).startswith("Error")


def test_reads_keep_state_and_writes_change_it():
    env = make_env("retail")
    env.reset(1)
    before = env.db_hash()
    order_id, order = next((o, v) for o, v in sorted(env.db["orders"].items()) if v["status"] == "pending")
    view = json.loads(env.step({"name": "get_order_details", "arguments": json.dumps({"order_id": order_id})}))
    assert view["status"] == "pending" and env.db_hash() == before
    result = env.step({"name": "cancel_pending_order", "arguments": {"order_id": order_id, "reason": "ordered by mistake"}})
    assert json.loads(result)["status"] == "cancelled" and env.db_hash() != before
    assert env.step({"name": "cancel_pending_order", "arguments": {"order_id": order_id, "reason": "ordered by mistake"}}).startswith("Error")
    read, args, check = env.tools["cancel_pending_order"].verify({"order_id": order_id, "reason": "ordered by mistake"})
    assert check(json.loads(env.step({"name": read, "arguments": args})))
    assert [r.applied for r in env.log] == [False, True, False, False]


def test_library_rules():
    env = make_env("library")
    env.reset(2)
    mid, member = next((m, v) for m, v in sorted(env.db["members"].items()) if v["fines"] > 0)
    bid = next(b for b, v in sorted(env.db["books"].items()) if v["available"] > 0 and b not in member["loans"])
    assert "unpaid fines" in env.step({"name": "checkout_book", "arguments": {"member_id": mid, "book_id": bid}})
    assert json.loads(env.step({"name": "pay_fines", "arguments": {"member_id": mid}}))["fines"] == 0
    assert bid in [x["book_id"] for x in json.loads(env.step({"name": "checkout_book", "arguments": {"member_id": mid, "book_id": bid}}))["loans"]]


def test_fault_injector_is_seeded_and_respects_rates():
    a, b = FaultInjector(0.2, 0.1, 5), FaultInjector(0.2, 0.1, 5)
    seq_a, seq_b = [a.draw() for _ in range(2000)], [b.draw() for _ in range(2000)]
    assert seq_a == seq_b
    assert seq_a != [FaultInjector(0.2, 0.1, 6).draw() for _ in range(2000)]
    assert 0.15 < seq_a.count("transient") / 2000 < 0.25 and 0.06 < seq_a.count("edge") / 2000 < 0.14
    assert set(FaultInjector(0, 0, 1).draw() for _ in range(50)) == {"ok"}
    with pytest.raises(ValueError, match="sum to <= 1"):
        FaultInjector(0.8, 0.5, 0)


def test_transient_changes_nothing_and_edge_write_is_applied():
    env = make_env("retail")
    env.reset(3, faults=FaultInjector(1.0, 0.0, 0))
    before = env.db_hash()
    uid = sorted(env.db["users"])[0]
    addr = {"street": "1 Elm St", "city": "Ashford", "zip": "12345"}
    assert env.step({"name": "update_user_address", "arguments": {"user_id": uid, "address": addr}}) == TRANSIENT_MESSAGE
    assert env.db_hash() == before
    env.reset(3, faults=FaultInjector(0.0, 1.0, 0))
    assert env.step({"name": "update_user_address", "arguments": {"user_id": uid, "address": addr}}) == EDGE_WRITE_MESSAGE
    assert env.db["users"][uid]["address"] == addr and env.log[-1].applied
    assert "notice" in json.loads(env.step({"name": "get_user_details", "arguments": {"user_id": uid}}))


def test_argument_error_reports_schema_violations():
    spec = make_env("retail").tools["set_item_quantity"].spec
    assert argument_error(spec, {"order_id": "O1", "product_id": "P1", "quantity": 2}) is None
    assert "maximum" in argument_error(spec, {"order_id": "O1", "product_id": "P1", "quantity": 50})
    assert argument_error(spec, '["list"]') == "arguments must be a JSON object"
