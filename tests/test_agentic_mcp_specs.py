"""Real MCP specs: conversion to OpenAI function specs, validation with rejections counted by reason, unique names."""

import json
from pathlib import Path

import pytest

from k2core.agentic.mcp_specs import load_mcp_tools
from k2core.agentic.repository import RepoTool, spec_problem, tools_frame, tools_from_frame, unique_names
from k2core.agentic.specs import validate_specs

REAL = Path(__file__).resolve().parents[1] / "../shared/data/mcp-servers/servers.jsonl"
OBJ = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "$schema": "http://json-schema.org/draft-07/schema#"}


def server(sid, label, tools):
    return {"server_id": sid, "server_name": f"S{sid}", "primary_label": label, "custom_label": f"Domain {sid}", "tools": tools}


@pytest.fixture
def jsonl(tmp_path):
    servers = [
        server(1, "Weather", [
            {"name": "get.forecast", "description": "Forecast for a city", "input_schema": OBJ},
            {"name": "search", "description": "Search", "input_schema": {"type": "object"}},
            {"name": "nodesc", "description": "", "input_schema": OBJ},
        ]),
        server(2, "Finance", [
            {"name": "search", "description": "Search quotes", "input_schema": OBJ},
            {"name": "untyped", "description": "x", "input_schema": {"type": "object", "properties": {"a": {}}}},
            {"name": "badschema", "description": "x", "input_schema": {"type": "object", "properties": {"a": {"type": "strange"}}}},
            {"name": "crawled", "description": "from a web page", "input_schema": []},
            {"name": "req", "description": "x", "input_schema": {"type": "object", "properties": {}, "required": ["b"]}},
        ]),
    ]
    path = tmp_path / "servers.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in servers) + "\n")
    return path


def test_converts_validates_and_counts_rejections(jsonl):
    load = load_mcp_tools(jsonl)
    report = load.report()
    assert report["servers"] == 2 and report["tools_total"] == 8 and report["tools_valid"] == 3
    assert report["rejected_by_reason"] == {"no_description": 1, "untyped_property": 1, "invalid_json_schema": 1,
                                            "no_schema": 1, "required_not_in_properties": 1}
    first = load.tools[0]
    assert first.name == "get_forecast" and first.provenance == "mcp" and first.category == "Weather"
    assert "$schema" not in first.parameters and first.source == "mcp:1:S1"
    assert load.tools[1].parameters == {"type": "object", "properties": {}}


def test_names_become_unique_and_specs_stay_valid(jsonl):
    tools = unique_names(load_mcp_tools(jsonl).tools)
    names = [t.name for t in tools]
    assert names == ["get_forecast", "search", "domain_2_search"]
    validate_specs([t.spec() for t in tools])
    assert tools_from_frame(tools_frame(tools)) == tools


def test_missing_file_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="mcp_path"):
        load_mcp_tools(tmp_path / "absent.jsonl")


def test_spec_problem_names_the_reason():
    tool = RepoTool(name="a.b", description="d", parameters={"type": "object", "properties": {}}, output_description="",
                    category="c", domain="d", provenance="synthetic", source="t")
    assert spec_problem(tool.spec()) == "bad_name"
    assert spec_problem(tool.model_copy(update={"name": "ab"}).spec()) is None


@pytest.mark.skipif(not REAL.is_file(), reason="shared MCP collection not present")
def test_real_collection_head(tmp_path):
    head = tmp_path / "head.jsonl"
    with REAL.open() as fh:
        head.write_text("".join(next(fh) for _ in range(40)))
    load = load_mcp_tools(head)
    report = load.report()
    assert report["servers"] == 40 and report["tools_valid"] > 50
    assert report["tools_valid"] + report["tools_rejected"] == report["tools_total"]
    validate_specs([t.spec() for t in unique_names(load.tools)])


def spec_with(properties, **extra):
    return {"type": "function", "function": {"name": "t", "description": "d",
                                             "parameters": {"type": "object", "properties": properties, **extra}}}


OPTIONAL = {"anyOf": [{"type": "string"}, {"type": "null"}]}
NOTE = {"type": "object", "properties": {"title": {"type": "string"}, "folder": OPTIONAL}, "required": ["title"]}


@pytest.mark.parametrize("properties, extra", [
    ({"note": {"$ref": "#/$defs/Note"}}, {"$defs": {"Note": NOTE}}),  # pydantic: nested models in $defs
    ({"note": {"anyOf": [{"$ref": "#/definitions/Note"}, {"type": "null"}]}}, {"definitions": {"Note": NOTE}}),
    ({"a": {"type": "string"}, "b": {"anyOf": [{"$ref": "#/properties/a"}, {"type": "null"}]}}, {}),  # into properties
    ({"n": {"allOf": [{"type": ["number", "string"]}, {"minimum": 0}]}}, {}),  # intersection with a typed part
    ({"s": {"anyOf": [{"anyOf": [{"not": {}}, {"type": "string"}]}, {"type": "null"}]}}, {}),  # zod's optional string
    ({"node": {"$ref": "#/$defs/Node"}},  # a recursive model
     {"$defs": {"Node": {"type": "object", "properties": {"parent": {"$ref": "#/$defs/Node"}, "x": OPTIONAL}}}}),
])
def test_typed_through_refs_unions_and_intersections_is_accepted(properties, extra):
    assert spec_problem(spec_with(properties, **extra)) is None


@pytest.mark.parametrize("properties, extra", [
    ({"note": {"$ref": "#/$defs/Missing"}}, {"$defs": {"Note": NOTE}}),  # dangling
    ({"note": {"$ref": "https://example.com/note.json"}}, {}),  # remote: not fetched, so not known to be typed
    ({"loop": {"$ref": "#/$defs/A"}}, {"$defs": {"A": {"$ref": "#/$defs/A"}}}),  # a cycle that never reaches a type
    ({"n": {"allOf": [{"minimum": 0}, {"description": "x"}]}}, {}),
    ({"s": {"anyOf": [{"not": {}}]}}, {}),  # matches nothing at all
    ({"note": {"$ref": "#/$defs/Note"}},  # typed itself, but a property of the referenced object is not
     {"$defs": {"Note": {"type": "object", "properties": {"title": {"title": "Title"}}}}}),
])
def test_untyped_behind_refs_is_still_rejected(properties, extra):
    assert spec_problem(spec_with(properties, **extra)) == "untyped_property"


@pytest.mark.skipif(not REAL.is_file(), reason="shared MCP collection not present")
def test_full_collection_measurement():
    """The whole catalogue (recorded in docs/benchmarks.md): what is still rejected is the data's fault (no schema
    or description, properties without any type, invalid JSON Schema, a required name with no property)."""
    report = load_mcp_tools(REAL).report()
    assert (report["servers"], report["tools_total"], report["tools_valid"]) == (2120, 17578, 5586)
    assert report["rejected_by_reason"] == {"no_schema": 11534, "no_description": 442, "invalid_json_schema": 8,
                                            "untyped_property": 7, "required_not_in_properties": 1}
