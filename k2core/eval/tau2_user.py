"""τ²'s user simulator played by any chat backend: the customer of one task's scenario.

As in τ² (`user/user_simulator.py`, `data/tau2/user_simulator/simulation_guidelines.md`): the system prompt is the
global guidelines followed by the task's scenario in a `<scenario>` block; the simulator sees the conversation with
roles flipped (the agent's text messages as user turns, its own as assistant turns; tool traffic is not shown to
it), answers greedily, and ends the conversation by writing ###STOP###, ###TRANSFER### or ###OUT-OF-SCOPE###.
It has the interface of the rollouts' scripted users (`first_message`, `reply`, `done`).
"""

from __future__ import annotations

from k2core.agentic.rollout import EndEpisode
from k2core.eval.tau2_data import Tau2Task, user_guidelines
from k2core.eval.tau2_reward import USER_ERROR
from k2core.llm import ChatBackend, ChatRequest, RequestError

STOP, TRANSFER, OUT_OF_SCOPE = "###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###"
STOP_TOKENS = (STOP, TRANSFER, OUT_OF_SCOPE)
GREETING = "Hi! How can I help you today?"  # τ²'s first agent message, before the user speaks


def user_system_prompt(task: Tau2Task) -> str:
    return f"{user_guidelines()}\n\n<scenario>\n{task.scenario}\n</scenario>"


class LLMUser:
    """One conversation's simulated customer. A reply the backend refuses, or an empty one, ends the conversation
    as a user error (τ² scores it 0)."""

    def __init__(self, backend: ChatBackend, task: Tau2Task, max_tokens: int, seed: int,
                 temperature: float = 0.0) -> None:
        self.backend, self.max_tokens, self.seed, self.temperature = backend, max_tokens, seed, temperature
        self.messages: list[dict[str, str]] = [{"role": "system", "content": user_system_prompt(task)}]
        self.done = False

    def first_message(self) -> str:
        """The opening line, answering τ²'s greeting."""
        return self.reply(GREETING)

    def reply(self, agent_text: str) -> str:
        self.messages.append({"role": "user", "content": agent_text})
        request = ChatRequest(messages=list(self.messages), temperature=self.temperature,
                              seed=self.seed + len(self.messages), max_tokens=self.max_tokens)
        try:
            text = self.backend.complete(request).message.get("content") or ""
        except RequestError as error:
            raise EndEpisode(USER_ERROR) from error
        if not text.strip():
            raise EndEpisode(USER_ERROR)
        self.messages.append({"role": "assistant", "content": text})
        self.done = any(token in text for token in STOP_TOKENS)
        return text
