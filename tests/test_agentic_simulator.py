"""Stateful tool simulator: consistency across calls, seeded modes, LLM engine contract and fallback."""

import json
from collections import Counter

from k2core.agentic.evolve import closed_object, template_tools
from k2core.agentic.llm_roles import JsonAsker
from k2core.agentic.repository import RepoTool
from k2core.agentic.simulator import LLMEngine, ModeInjector, RuleEngine, SimWorld, tool_kind
from k2core.llm import ChatRequest, ChatResponse, Usage

TOOLS = [RepoTool(name=f"crm_{verb}_contact", description=desc, parameters=closed_object(props, req), output_description=out,
                  category="CRM", domain="Contacts", provenance="synthetic", source="test")
         for verb, desc, props, req, out in template_tools("contact")]


def world(p=(0.0, 0.0, 0.0), seed=0, engine=None):
    return SimWorld(TOOLS, engine or RuleEngine(), ModeInjector(*p, seed))


def call(w, tool, **args):
    return w.step({"name": tool, "arguments": json.dumps(args)})


def test_tool_kinds_from_names():
    assert tool_kind("crm_get_contact") == ("read", "contact")
    assert tool_kind("listIssues") == ("list", "issues")
    assert tool_kind("web_search_exa") == ("list", "exa")
    assert tool_kind("translate_text") == ("action", "translate_text")


def test_state_is_consistent_across_calls():
    w = world()
    created = json.loads(call(w, "crm_create_contact", name="Ann", priority="high"))["created"]
    cid = created["contact_id"]
    assert json.loads(call(w, "crm_get_contact", contact_id=cid))["name"] == "Ann"
    assert [r["contact_id"] for r in json.loads(call(w, "crm_list_contact", limit=5))["items"]] == [cid]
    unseen = json.loads(call(w, "crm_get_contact", contact_id="c-77"))
    assert json.loads(call(w, "crm_get_contact", contact_id="c-77")) == unseen
    call(w, "crm_update_contact", contact_id="c-77", priority="low")
    assert json.loads(call(w, "crm_get_contact", contact_id="c-77"))["priority"] == "low"
    call(w, "crm_delete_contact", contact_id="c-77")
    assert call(w, "crm_get_contact", contact_id="c-77").startswith("Error: contact c-77 not found")
    assert call(w, "crm_get_contact", contact_id=5).startswith("Error: invalid arguments")
    assert [r.applied for r in w.log] == [True, True, True, True, True, True, True, True, False, False]


def test_modes_are_seeded_and_follow_rates():
    inj = ModeInjector(0.2, 0.1, 0.1, seed=3)
    counts = Counter(inj.draw() for _ in range(4000))
    assert abs(counts["error"] / 4000 - 0.2) < 0.03 and abs(counts["partial"] / 4000 - 0.1) < 0.03 and abs(counts["edge"] / 4000 - 0.1) < 0.03
    runs = []
    for _ in range(2):
        w = world((0.3, 0.2, 0.2), seed=11)
        runs.append([call(w, "crm_create_contact", name=f"n{i}") for i in range(20)] + [w.db_hash()])
    assert runs[0] == runs[1]
    outcomes = {r.outcome for r in w.log}
    assert outcomes == {"ok", "transient", "partial", "edge"}


def test_error_changes_nothing_and_partial_saves_part():
    w = world((1.0, 0.0, 0.0))
    before = w.db_hash()
    assert call(w, "crm_create_contact", name="Bo", notes="vip").startswith("Error: service temporarily unavailable")
    assert w.db_hash() == before
    w = world((0.0, 1.0, 0.0))
    out = json.loads(call(w, "crm_create_contact", name="Bo", notes="vip"))
    assert out["status"] == "partial" and out["not_saved"] == ["notes"] and "notes" not in out["created"]


class WorldModelBackend:
    """A scripted 'model' that applies the call to the state in the prompt; the first answer is malformed."""

    backend_id = "world-model"

    def __init__(self):
        self.prompts = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[0]["content"]
        self.prompts.append(prompt)
        if len(self.prompts) == 1:
            text = "{broken"
        else:
            state = json.loads(prompt.split("World state (JSON): ")[1].split("\n")[0])
            args = json.loads(prompt.split("Call arguments: ")[1].split("\n")[0])
            state.setdefault("notes", []).append(args)
            text = json.dumps({"result": {"saved": len(state["notes"])}, "state": state})
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1, completion_tokens=1))


def test_llm_engine_keeps_state_in_prompt_and_forces_mode():
    backend = WorldModelBackend()
    engine = LLMEngine(JsonAsker(backend, retries=1, temperature=0.0, max_tokens=256, seed=0), seed=0)
    w = world(engine=engine)
    assert json.loads(call(w, "crm_create_contact", name="A")) == {"saved": 1}
    assert json.loads(call(w, "crm_create_contact", name="B")) == {"saved": 2}
    assert w.state == {"notes": [{"name": "A"}, {"name": "B"}]}
    assert '"notes": [{"name": "A"}]' in backend.prompts[-1] and "Mode: success" in backend.prompts[-1]
    assert engine.fallbacks == 0 and engine.asker.failures == 0


def test_llm_engine_falls_back_to_rules_after_retries():
    class Broken:
        backend_id = "broken"

        def complete(self, request):
            return ChatResponse(message={"role": "assistant", "content": "no"}, usage=Usage(prompt_tokens=1, completion_tokens=1))

    engine = LLMEngine(JsonAsker(Broken(), retries=1, temperature=0.0, max_tokens=16, seed=0), seed=0)
    w = world(engine=engine)
    assert "created" in json.loads(call(w, "crm_create_contact", name="A"))
    assert engine.fallbacks == 1 and engine.asker.calls == 2
