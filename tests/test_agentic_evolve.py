"""Synthetic tools by hierarchical domain evolution (template and LLM evolvers) and near-duplicate removal."""

import json

import numpy as np
import pytest

from k2core.agentic.dedup import keep_mask, lexical_vectors, model_available, vectors
from k2core.agentic.evolve import LLMEvolver, TemplateEvolver, evolve_tools
from k2core.agentic.llm_roles import JsonAsker
from k2core.agentic.repository import RepoTool
from k2core.agentic.specs import validate_specs
from k2core.llm import ChatRequest, ChatResponse, Usage


def real(name, category, domain):
    return RepoTool(name=name, description=f"{name} tool", parameters={"type": "object", "properties": {}}, output_description="",
                    category=category, domain=domain, provenance="mcp", source="mcp:0:x")


REAL = [real("get_invoice", "Finance", "Billing Desk"), real("list_invoices", "Finance", "Billing Desk"),
        real("create_payment", "Finance", "Billing Desk"), real("get_quote", "Finance", "Market Data"),
        real("get_forecast", "Weather", "City Weather")]


class ScriptBackend:
    """Answers requests from a queue of canned replies (test double for a chat model)."""

    backend_id = "script"

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return ChatResponse(message={"role": "assistant", "content": self.replies.pop(0)}, usage=Usage(prompt_tokens=10, completion_tokens=5))


def test_template_evolution_walks_categories_domains_tools():
    evolver = TemplateEvolver(REAL, seed=0)
    assert evolver.categories() == ["Finance", "Weather"]
    assert evolver.domains("Finance", 5) == ["Billing Desk", "Market Data"]
    tools, report = evolve_tools(evolver, evolver.categories(), 2, 4)
    assert (report.categories, report.domains, report.tools) == (2, 3, 12) and not report.rejected
    validate_specs([t.spec() for t in tools])
    assert all(t.provenance == "synthetic" and t.output_description for t in tools)
    billing = [t.name for t in tools if t.domain == "Billing Desk"]
    assert all(n.startswith("billing_desk_") for n in billing) and any("invoice" in n or "payment" in n for n in billing)
    again, _ = evolve_tools(TemplateEvolver(REAL, seed=0), evolver.categories(), 2, 4)
    assert again == tools


def test_llm_evolver_validates_and_retries():
    good_tool = {"name": "place_order", "description": "Place a limit order on the exchange.",
                 "parameters": {"type": "object", "properties": {"symbol": {"type": "string", "description": "Ticker"}}, "required": ["symbol"]},
                 "output_description": "The order id and status."}
    bad_tool = {**good_tool, "parameters": {"type": "object", "properties": {"symbol": {"description": "no type"}}}}
    backend = ScriptBackend([
        "not json", json.dumps({"domains": ["crypto order desk", "crypto order desk", "robo advisor"]}),
        json.dumps({"tools": [bad_tool]}), "```json\n" + json.dumps({"tools": [good_tool]}) + "\n```",
        json.dumps({"tools": []}), json.dumps({"tools": []}), json.dumps({"tools": []}),
    ])
    asker = JsonAsker(backend, retries=2, temperature=0.0, max_tokens=512, seed=7)
    tools, report = evolve_tools(LLMEvolver(asker), ["Financial Trading"], 2, 3)
    assert [t.name for t in tools] == ["place_order"] and tools[0].domain == "crypto order desk"
    assert report.domains == 2 and asker.calls == 7 and asker.failures == 1
    assert "Invalid answer" in backend.requests[1].messages[-1]["content"]
    assert "untyped_property" in backend.requests[3].messages[-1]["content"]
    assert [r.seed for r in backend.requests[:2]] == [7, 8]


def test_lexical_dedup_removes_near_copies_keeps_first():
    texts = ["get weather forecast for a city by name", "get the weather forecast for a city by name",
             "create an invoice for a customer", "get weather forecast for a city by name"]
    keep = keep_mask(lexical_vectors(texts), 0.8)
    assert keep.tolist() == [True, False, True, False]
    assert np.allclose(np.linalg.norm(lexical_vectors(texts), axis=1), 1.0)


@pytest.mark.skipif(not model_available(), reason="all-MiniLM-L6-v2 package not installed")
def test_embedding_dedup_with_minilm():
    texts = ["Fetch the current weather forecast for a city.", "Get today's weather forecast for a given city.",
             "Delete a git branch from the repository."]
    vecs, method = vectors(texts, "embedding")
    assert method == "embedding" and vecs.shape == (3, 384)
    assert keep_mask(vecs, 0.8).tolist() == [True, False, True]
