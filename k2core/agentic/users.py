"""Rule-based user simulator with personas (τ-bench style: reveal details on request, then ###STOP###).

It reads only the agent's text, so the same simulator drives scripted agents and trained models.
"""

from __future__ import annotations

import re

from k2core.agentic.tasks import Task, slot_text

STOP = "###STOP###"
PERSONAS = ("terse", "chatty", "guarded")
SLOT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "order_id": ("order id", "order number", "which order"),
    "reason": ("reason", "why"),
    "product": ("product", "item"),
    "quantity": ("quantity", "how many"),
    "address": ("address",),
    "title": ("title", "which book"),
}
CONFIRM_CUES = ("yes/no", "shall i", "should i", "proceed", "confirm")
MAX_STRIKES = 3


class ScriptedUser:
    """Pursues the task's goals one at a time in a persona's style."""

    def __init__(self, task: Task, persona: str, slot_descriptions: dict[str, str]) -> None:
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; choose from {PERSONAS}")
        self.task, self.persona, self.descriptions = task, persona, slot_descriptions
        self.goal = 0
        self.done = False
        self.strikes = 0

    def _known(self) -> dict[str, str]:
        slots = {k: slot_text(v) for k, v in self.task.goals[self.goal].slots.items()}
        return {"email": self.task.identity["email"], **slots}

    def _state_goal(self, first: bool) -> str:
        g, email = self.task.goals[self.goal], self.task.identity["email"]
        if self.persona == "terse":
            return f"{g.phrase[0].upper()}{g.phrase[1:]}. {email}" if first else f"Also: {g.phrase}."
        if self.persona == "chatty":
            if first:
                return f"Hi there! I hope your day is going well. I'd like to {g.phrase}. My email is {email}, if that helps. Thank you so much!"
            return f"Wonderful, thank you! One more thing: I'd also like to {g.phrase}."
        return f"Hello. I want to {g.vague}." if first else f"Thanks. I also want to {g.vague}."

    def first_message(self) -> str:
        return self._state_goal(first=True)

    def _answer_slots(self, names: list[str]) -> str:
        known = self._known()
        parts = [(self.descriptions.get(n, n), known[n]) for n in names]
        if self.persona == "terse":
            return "; ".join(v for _, v in parts)
        if self.persona == "chatty":
            return "Sure! " + ", and ".join(f"my {d} is {v}" for d, v in parts) + ". Let me know if you need anything else."
        return " ".join(f"My {d} is {v}." for d, v in parts)

    def _next_goal_or_stop(self) -> str:
        self.goal += 1
        if self.goal < len(self.task.goals):
            return self._state_goal(first=False)
        self.done = True
        return {"terse": "Thanks.", "chatty": "That's everything, thank you so much for your help!", "guarded": "Thank you."}[self.persona] + f" {STOP}"

    def reply(self, agent_text: str) -> str:
        """Answer slot questions and confirmations; treat a statement as the current goal being done."""
        if self.done:
            return STOP
        text = agent_text.lower()
        if "?" in text and "anything else" not in text:
            if any(c in text for c in CONFIRM_CUES) and "provide" not in text:
                return {"terse": "yes", "chatty": "Yes, that's right, please go ahead!", "guarded": "Yes, go ahead."}[self.persona]
            asked = [n for n in self._known() if any(k in text for k in SLOT_KEYWORDS.get(n, (n,)))]
            if asked:
                return self._answer_slots(asked)
            self.strikes += 1
            if self.strikes >= MAX_STRIKES:
                self.done = True
                return f"I don't think this is going anywhere. {STOP}"
            return "I'm not sure what you mean. Please just help me with what I asked."
        return self._next_goal_or_stop()


def mentioned(value: str, user_texts: list[str]) -> bool:
    """Whether a slot value has been said by the user (whole-word, case-insensitive)."""
    pattern = re.compile(rf"(?<![\w.@-]){re.escape(value.lower())}(?![\w@-])")
    return any(pattern.search(t.lower()) for t in user_texts)


class RequestUser:
    """A scripted user for simulated-tool tasks: states the whole request in a persona's style, repeats it when
    asked a question, and stops once the agent has reported back."""

    OPENERS = {"terse": "{req}", "chatty": "Hi! Hope you're well. Could you help me with something? {req} Thanks a lot!",
               "guarded": "Hello. I need the following done. {req}"}

    def __init__(self, instruction: str, persona: str) -> None:
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; choose from {PERSONAS}")
        self.request = instruction.removeprefix("You want the assistant to do the following, in order: ").split(". Give these")[0]
        self.persona = persona
        self.done = False
        self.strikes = 0

    def first_message(self) -> str:
        return self.OPENERS[self.persona].format(req=f"Please {self.request}.")

    def reply(self, agent_text: str) -> str:
        if "?" in agent_text and "anything else" not in agent_text.lower() and self.strikes < MAX_STRIKES:
            self.strikes += 1
            return f"As I said: please {self.request}."
        self.done = True
        return STOP
