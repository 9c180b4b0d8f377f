"""Scripted agents: synthesized system prompts, tool subsets and imperfect policies (K2 agent diversification).

An agent follows the task's gold plan but only uses values it has legitimately learnt (said by
the user or returned by a tool), asks for the rest, and may confirm, retry, verify, or slip (wrong
argument, extra write, missing tool) at configured rates so that the judge has work to do.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pydantic import BaseModel, ConfigDict

from k2core.agentic.env import ToolEnv
from k2core.agentic.faults import EDGE_WRITE_MESSAGE, TRANSIENT_MESSAGE
from k2core.agentic.sim_tasks import salient
from k2core.agentic.tasks import Goal, Task, slot_text
from k2core.agentic.users import mentioned

MAX_SLOT_ASKS = 2
OPENERS = [
    "You are a customer-support agent for {domain}.",
    "You are Sam, the virtual assistant of {domain}. Help callers with their accounts.",
    "As the help-desk assistant of {domain}, you resolve requests using only the tools provided.",
    "You work the support chat of {domain}. Users come to you with account requests.",
]
STYLES = ["Be concise.", "Be warm and explain what you are doing.", "Keep replies short and factual.", "Use plain language."]
RULES = [
    "Identify the user by email before looking anything up or changing anything.",
    "Never invent ids; get them from the user or from tool results.",
    "Only act on what the user asked for.",
]


class AgentProfile(BaseModel):
    """One synthesized agent: prompt, tools and behaviour knobs."""

    model_config = ConfigDict(extra="forbid")
    name: str
    system_prompt: str
    tools: list[str]
    confirm_writes: bool
    max_retries: int
    verify_ambiguous: bool
    narrate: bool
    p_wrong_arg: float
    p_extra_write: float


def sample_agent(env: ToolEnv, rng: random.Random, wrong_arg_prob: float, extra_write_prob: float, missing_tool_prob: float) -> AgentProfile:
    """Draw an agent: half are careful (no slips); the rest slip at the given rates and may lack a write tool.

    Any agent may also be declared without one read tool (same rate), so tool sets vary and some tasks become
    impossible.
    """
    careful = rng.random() < 0.5
    confirm, verify = rng.random() < 0.6, careful or rng.random() < 0.3
    retries = 2 if careful else rng.choice([0, 1, 2])
    tools = list(env.tools)
    if rng.random() < missing_tool_prob:
        tools.remove(rng.choice([n for n, t in env.tools.items() if t.kind == "read" and n != env.identify_tool]))
    if not careful and rng.random() < missing_tool_prob:
        tools.remove(rng.choice([n for n, t in env.tools.items() if t.kind == "write"]))
    rules = [rng.choice(RULES), rng.choice(RULES)]
    if confirm:
        rules.append("Before any change, describe it and ask the user to confirm with yes or no.")
    if retries:
        rules.append("If a tool reports a temporary failure, retry it.")
    if verify:
        rules.append("If a change times out, check the record before trying again.")
    prompt = " ".join([rng.choice(OPENERS).format(domain=env.domain_description), rng.choice(STYLES), *dict.fromkeys(rules)])
    return AgentProfile(
        name=f"{env.name}-{'careful' if careful else 'hasty'}-{rng.randrange(10**6):06d}", system_prompt=prompt, tools=tools,
        confirm_writes=confirm, max_retries=retries, verify_ambiguous=verify, narrate=rng.random() < 0.5,
        p_wrong_arg=0.0 if careful else wrong_arg_prob, p_extra_write=0.0 if careful else extra_write_prob,
    )


def oracle_agent(env: ToolEnv) -> AgentProfile:
    """A careful agent with every tool and no slips (reference policy for the evaluation loop)."""
    return AgentProfile(
        name=f"{env.name}-oracle", system_prompt=f"{OPENERS[0].format(domain=env.domain_description)} {RULES[0]}",
        tools=list(env.tools), confirm_writes=True, max_retries=3, verify_ambiguous=True, narrate=False, p_wrong_arg=0.0, p_extra_write=0.0,
    )


class ScriptedAgent:
    """A policy `messages -> assistant message` driven by the task plan and the conversation so far."""

    def __init__(self, profile: AgentProfile, task: Task, env: ToolEnv, rng: random.Random) -> None:
        self.p, self.task, self.env, self.rng = profile, task, env, rng
        self.goal, self.pos = 0, 0
        self.results: dict[int, str] = {}
        self.confirmed: set[int] = set()
        self.awaiting_confirm: int | None = None
        self.pending: dict[str, Any] | None = None
        self.retries = 0
        self.asks: dict[str, int] = {}
        self.calls = 0
        self.extra_done = False
        self.user_turns = 0
        self.goal_start = 0

    # --- message builders ----------------------------------------------------------------------
    def _say(self, text: str) -> dict:
        return {"role": "assistant", "content": text}

    def _call(self, name: str, args: dict, purpose: str, step: int | None) -> dict:
        self.pending = {"name": name, "args": args, "purpose": purpose, "step": step}
        call_id = f"functions.{name}:{self.calls}"
        self.calls += 1
        text = self.rng.choice(["Let me check that.", "One moment.", "Working on it."]) if self.p.narrate else ""
        return {"role": "assistant", "content": text, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}

    # --- policy --------------------------------------------------------------------------------
    def __call__(self, messages: list[dict]) -> dict:
        user_texts = [m["content"] for m in messages if m["role"] == "user"]
        self.user_turns = len(user_texts)
        last = messages[-1]
        if last["role"] == "tool" and self.pending is not None:
            follow_up = self._on_result(last["content"])
            if follow_up is not None:
                return follow_up
        elif last["role"] == "user" and self.awaiting_confirm is not None:
            if "yes" in last["content"].lower():
                self.confirmed.add(self.awaiting_confirm)
            else:
                return self._fail("you did not confirm the change")
            self.awaiting_confirm = None
        return self._act(user_texts)

    def _on_result(self, result: str) -> dict | None:
        pend, self.pending = self.pending, None
        assert pend is not None
        if pend["purpose"] == "extra":
            return None
        if pend["purpose"] == "verify":
            if result == TRANSIENT_MESSAGE and self.retries < self.p.max_retries:
                self.retries += 1
                msg = self._call(pend["name"], pend["args"], "verify", pend["step"])
                assert self.pending is not None
                self.pending.update(check=pend["check"], write=pend["write"])
                return msg
            try:
                ok = pend["check"](json.loads(result))
            except (json.JSONDecodeError, AttributeError):
                ok = False
            if ok:
                self._advance(pend["step"], result)
                return None
            return self._retry(pend)
        if not result.startswith("Error"):
            self._advance(pend["step"], result)
            return None
        if result == TRANSIENT_MESSAGE:
            return self._retry(pend)
        if result == EDGE_WRITE_MESSAGE:
            if self.p.verify_ambiguous:
                read, read_args, check = self.env.tools[pend["name"]].verify(pend["args"])
                msg = self._call(read, read_args, "verify", pend["step"])
                assert self.pending is not None
                self.pending.update(check=check, write=pend)
                return msg
            return self._retry(pend)
        return self._fail(result.removeprefix("Error: "))

    def _retry(self, pend: dict) -> dict:
        target = pend.get("write", pend)
        if self.retries >= self.p.max_retries:
            return self._fail("the system kept failing")
        self.retries += 1
        return self._call(target["name"], target["args"], "gold", target["step"])

    def _advance(self, step: int, result: str) -> None:
        self.results[step] = result
        self.pos += 1
        self.retries = 0

    def _fail(self, why: str) -> dict:
        vague = self.task.goals[self.goal].vague.replace("my ", "your ").replace("I ", "you ")
        self._next_goal()
        self.awaiting_confirm = None
        return self._say(f"I'm sorry, I could not {vague}: {why}.")

    def _act(self, user_texts: list[str]) -> dict:
        if self.goal >= len(self.task.goals):
            return self._say("Everything you asked for is done. Have a nice day.")
        goal = self.task.goals[self.goal]
        if self.pos == len(goal.steps):
            return self._finish_goal(goal)
        idx = goal.steps[self.pos]
        step = self.task.plan[idx]
        if step.name not in self.p.tools:
            return self._fail("that is not something I can do here")
        missing = []
        for src in step.sources.values():
            if src.startswith("slot:"):
                slot = src.removeprefix("slot:")
                # the email identifies the user for the whole chat; other details count only if said for this goal
                value, said = (self.task.identity["email"], user_texts) if slot == "email" else (goal.slots[slot], user_texts[self.goal_start:])
                if not mentioned(slot_text(value), said):
                    missing.append(slot)
            elif int(src.removeprefix("step:")) not in self.results:
                return self._fail("an earlier step did not succeed")
        if missing:
            for slot in missing:
                self.asks[slot] = self.asks.get(slot, 0) + 1
            if max(self.asks[s] for s in missing) > MAX_SLOT_ASKS:
                return self._fail("I do not have the details I need")
            wanted = " and ".join(self.env.slot_descriptions[s] for s in dict.fromkeys(missing))
            return self._say(f"Could you please provide your {wanted}?")
        if step.kind == "write" and self.p.confirm_writes and idx not in self.confirmed:
            self.awaiting_confirm = idx
            shown = ", ".join(f"{k}={slot_text(v)}" for k, v in step.arguments.items())
            return self._say(f"I will call {step.name} with {shown}. Shall I proceed (yes/no)?")
        return self._call(step.name, self._maybe_perturb(step.arguments), "gold", idx)

    def _finish_goal(self, goal: Goal) -> dict:
        writes = [self.task.plan[i] for i in goal.steps if self.task.plan[i].kind == "write"]
        if writes and not self.extra_done and self.rng.random() < self.p.p_extra_write:
            self.extra_done = True
            wrong = self._perturb(writes[-1].arguments)
            if wrong is not None:
                return self._call(writes[-1].name, wrong, "extra", None)
        seen = " ".join(self.results.get(i, "") for i in goal.steps)
        found = [o for o in goal.outputs if o in seen]
        text = "Done: your request is complete." if not goal.outputs else "Here is what I found: " + "; ".join(found) + "."
        if self.p.confirm_writes:
            text += " Is there anything else I can help you with?"
        self._next_goal()
        return self._say(text)

    def _next_goal(self) -> None:
        self.goal, self.pos, self.retries, self.asks = self.goal + 1, 0, 0, {}
        self.goal_start = self.user_turns

    def _maybe_perturb(self, args: dict) -> dict:
        if self.rng.random() >= self.p.p_wrong_arg:
            return args
        wrong = self._perturb(args)
        return wrong if wrong is not None else args

    def _perturb(self, args: dict) -> dict | None:
        """Change one argument to a plausible wrong value; None if nothing can be changed."""
        for key in self.rng.sample(sorted(args), len(args)):
            value = args[key]
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                return {**args, key: value + 1 if value < 5 else value - 1}
            if isinstance(value, dict) and "zip" in value:
                return {**args, key: {**value, "zip": f"{(int(value['zip']) + 1) % 90000 + 10000}"}}
            if isinstance(value, str):
                others = self.env.similar_values(value)
                if others:
                    return {**args, key: self.rng.choice(others)}
        return None


class PlanAgent:
    """Scripted agent for simulated-tool tasks: one planned call per turn, retries temporary errors, reports
    failures and partial results, then summarizes the values the tools returned. It may slip (a wrong argument)
    at `p_wrong_arg`, which the judge must catch."""

    def __init__(self, plan: list[dict[str, Any]], max_retries: int, p_wrong_arg: float, rng: random.Random) -> None:
        self.plan, self.max_retries, self.p_wrong_arg, self.rng = plan, max_retries, p_wrong_arg, rng
        self.pos = self.retries = self.calls = 0
        self.reports: list[str] = []
        self.summarized = False

    def __call__(self, messages: list[dict]) -> dict:
        last = messages[-1]
        if last["role"] == "tool":
            result = last["content"]
            if result == TRANSIENT_MESSAGE and self.retries < self.max_retries:
                self.retries += 1
                return self._call(messages[-2]["tool_calls"][0]["function"])
            self.reports.append(self._report(self.plan[self.pos]["name"], result))
            self.pos, self.retries = self.pos + 1, 0
        if self.pos < len(self.plan) and not self.summarized:
            step = self.plan[self.pos]
            args = dict(step["arguments"])
            if args and self.rng.random() < self.p_wrong_arg:
                key = self.rng.choice(sorted(args))
                value = args[key]
                args[key] = value + 1 if isinstance(value, int) and not isinstance(value, bool) else f"{value}-x" if isinstance(value, str) else value
            return self._call({"name": step["name"], "arguments": json.dumps(args)})
        if not self.summarized:
            self.summarized = True
            return {"role": "assistant", "content": " ".join(self.reports)}
        return {"role": "assistant", "content": "Is there anything else I can help you with?"}

    def _call(self, fn: dict) -> dict:
        call_id = f"functions.{fn['name']}:{self.calls}"
        self.calls += 1
        return {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": fn["arguments"]}}]}

    @staticmethod
    def _report(name: str, result: str) -> str:
        if result.startswith("Error"):
            return f"{name} failed: {result.removeprefix('Error: ')}."
        values = ", ".join(salient(result)) or "no details returned"
        partial = " It only partially worked, so some parts were not completed." if '"partial' in result else ""
        notice = " Note: the service reported a notice about stale or empty data." if '"notice"' in result else ""
        return f"{name} done ({values}).{partial}{notice}"
