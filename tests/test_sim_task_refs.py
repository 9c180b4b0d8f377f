"""Simulated-task arguments for tools whose schemas use local `$ref`s (pydantic's `$defs`): the lint accepts them, so
sampling follows them too, recursive types included, and such tools get tasks."""

import random

from k2core.agentic.repo_agents import RepoAgent
from k2core.agentic.repository import RepoTool
from k2core.agentic.sim_tasks import generate_sim_task, sample_arguments, sample_value
from k2core.agentic.specs import argument_error, validate_spec

DEFS = {
    "Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city"], "additionalProperties": False},
    "Priority": {"type": "string", "enum": ["low", "high"]},
    "Line": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"$ref": "#/$defs/Count"}},
             "required": ["sku", "qty"], "additionalProperties": False},
    "Count": {"type": "integer", "minimum": 1, "maximum": 5},
    "Node": {"type": "object", "properties": {"label": {"type": "string"},
                                              "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                                              "parent": {"$ref": "#/$defs/Node"}},
             "required": ["label"], "additionalProperties": False},
}
PARAMETERS = {
    "type": "object",
    "$defs": DEFS,
    "properties": {
        "ship_to": {"$ref": "#/$defs/Address"},
        "priority": {"$ref": "#/$defs/Priority"},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}, "minItems": 2},
        "gift_to": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
        "tree": {"$ref": "#/$defs/Node"},
    },
    "required": ["ship_to", "priority", "lines", "gift_to", "tree"],
    "additionalProperties": False,
}


def tool(name="create_shipment", parameters=PARAMETERS):
    return RepoTool(name=name, description="Create a shipment. Returns its id.", parameters=parameters,
                    output_description="the shipment", category="Logistics", domain="Shipping", provenance="mcp", source="test")


def test_the_lint_accepts_the_spec_and_sampling_follows_every_ref():
    validate_spec(tool().spec())
    for seed in range(20):
        args = sample_arguments(tool(), random.Random(seed))
        assert args is not None and argument_error(tool().spec(), args) is None
        assert set(args["ship_to"]) >= {"city"} and args["priority"] in ("low", "high")
        assert len(args["lines"]) == 2 and all(1 <= line["qty"] <= 5 for line in args["lines"])
        assert isinstance(args["gift_to"], dict) and isinstance(args["tree"]["label"], str)


def test_a_recursive_type_is_followed_once():
    """Inside a type, that type is not followed again: an optional part of it stays out, an array of it empty."""
    tree = sample_value(PARAMETERS["properties"]["tree"], "tree", random.Random(0), 1, PARAMETERS)
    assert set(tree) == {"label"}
    folder = {"type": "object", "properties": {"name": {"type": "string"}, "subfolders": {"type": "array", "items": {"$ref": "#"}}},
              "required": ["name", "subfolders"]}
    assert sample_value(folder, "", random.Random(0))["subfolders"][0]["subfolders"] == []  # "#" is followed once
    nested = {"type": "object", "$defs": {"Folder": {**folder, "properties": {**folder["properties"],
                                                                           "subfolders": {"type": "array", "items": {"$ref": "#/$defs/Folder"}}}}},
              "properties": {"root": {"$ref": "#/$defs/Folder"}}, "required": ["root"]}
    args = sample_value(nested, "", random.Random(0))
    assert args["root"]["subfolders"] == [] and argument_error({"function": {"parameters": nested}}, args) is None


def test_a_reference_cycle_ends():
    looped = {"type": "object", "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
              "properties": {"x": {"$ref": "#/$defs/A"}}, "required": ["x"]}
    assert isinstance(sample_value(looped, "", random.Random(0))["x"], str)


def test_a_tool_with_refs_gets_tasks():
    tools = {t.name: t for t in (tool(), tool("get_shipment", {"type": "object", "$defs": DEFS,
                                                                 "properties": {"shipment_id": {"type": "string"}},
                                                                 "required": ["shipment_id"]}))}
    agent = RepoAgent(name="shipper", category="Logistics", domain="Shipping", system_prompt="You ship things.",
                      tools=list(tools))
    tasks = [generate_sim_task(agent, tools, f"t{s}", s, 3, "terse") for s in range(10)]
    used = {c["name"] for t in tasks if t is not None for c in t.plan}
    assert "create_shipment" in used
