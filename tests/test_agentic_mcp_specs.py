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
