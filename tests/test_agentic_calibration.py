"""Judge calibration: the LLM judge's verdicts on environment trajectories against their state verdicts, with
deterministic judge backends whose mistakes are known, so every reported number is asserted exactly."""

import json

import pytest

from k2core.agentic import AgenticConfig, generate_tool_data
from k2core.agentic.calibration import CalibrationCase, Confusion, calibrate_judge, mistake_cases
from k2core.agentic.generate import calibration_jobs, plan_tool_data, rollout_env
from k2core.agentic.judge import judge_episode
from k2core.agentic.llm_roles import JsonAsker, LLMJudge, transcript
from k2core.agentic.tasks import generate_tasks
from k2core.llm import ChatRequest, ChatResponse, Usage
from tests.test_agentic_generate import CI

ROLES = dict(tool_generator=None, user=None, tool_simulator=None, judge="judge-model", judge_votes=3, json_retries=0,
             temperature=0.0, max_tokens=64)


def verdict(passed: bool) -> ChatResponse:
    text = json.dumps({"passed": passed, "score": float(passed), "reasons": ["checked"]})
    return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1, completion_tokens=1))


class KnownJudge:
    """Says what `answers` holds for the conversation in the prompt (keyed by its transcript); counts requests."""

    backend_id = "known-judge"

    def __init__(self, answers: dict[str, bool]):
        self.answers, self.requests = answers, 0

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests += 1
        prompt = request.messages[0]["content"]
        return verdict(self.answers[prompt.split("Conversation:\n")[1].rsplit("\n\nCheck each", 1)[0]])


class AlwaysPass:
    backend_id = "always-pass"

    def complete(self, request: ChatRequest) -> ChatResponse:
        return verdict(True)


def test_confusion_metrics_and_sums():
    counts = Confusion(tp=6, fp=2, fn=3, tn=9)
    assert counts.metrics() == {"scored": 20, "agreement": 0.75, "precision": 0.75, "recall": 6 / 9, "state_pass_rate": 0.45,
                                "judge_pass_rate": 0.4, "confusion": {"tp": 6, "fp": 2, "fn": 3, "tn": 9}}
    grown = counts + Confusion(tp=1)
    grown.add(state_passed=False, judge_passed=True)
    grown.add(state_passed=True, judge_passed=False)
    assert grown == Confusion(tp=7, fp=3, fn=4, tn=9)
    assert Confusion().metrics()["precision"] == 0.0 and Confusion(tn=3).metrics()["recall"] == 0.0


@pytest.fixture(scope="module")
def cases():
    tasks = generate_tasks(["retail", "library"], 4, 1, 2, ["terse", "chatty", "guarded"], 0.0, seed=2)
    return mistake_cases(tasks, max_turns=30, seed=0)


def test_mistake_cases_pair_careful_and_slipping_agents(cases):
    assert all(c.episode.end_reason == "user_stop" for c in cases)
    # the second task's calls have no argument a mistake can change: its slipping run is left out
    assert [(c.task.task_id[-1], c.state_passed) for c in cases] == [
        ("0", True), ("0", False), ("1", True), ("2", True), ("2", False), ("3", True), ("3", False)]
    careful, slipping = cases[0].episode, cases[1].episode
    assert careful.messages[1] == slipping.messages[1] and careful.calls != slipping.calls


def test_calibration_reports_the_judges_known_mistakes(cases):
    wrong = {0, 1}  # a false fail on a passing trajectory, a false pass on a failing one
    answers = {transcript(c.episode.messages): c.state_passed != (i in wrong) for i, c in enumerate(cases)}
    assert len(answers) == len(cases)
    backend = KnownJudge(answers)
    confusion = calibrate_judge(LLMJudge(JsonAsker(backend, 0, 0.0, 64, 0), votes=3), cases)
    assert confusion == Confusion(tp=3, fp=1, fn=1, tn=2) and backend.requests == 3 * len(cases)
    assert confusion.metrics() == {"scored": 7, "agreement": 5 / 7, "precision": 0.75, "recall": 0.75, "state_pass_rate": 4 / 7,
                                   "judge_pass_rate": 4 / 7, "confusion": {"tp": 3, "fp": 1, "fn": 1, "tn": 2}}
    flipped = [CalibrationCase(c.task, c.episode, not c.state_passed, c.seed) for c in cases]
    assert calibrate_judge(LLMJudge(JsonAsker(KnownJudge(answers), 0, 0.0, 64, 0), votes=1), flipped).metrics()["agreement"] == 2 / 7


def test_synth_statistics_report_calibration_on_its_own_env_trajectories():
    cfg = AgenticConfig(**{**CI, "num_tasks": 8, "trajectories_per_task": 2, "roles": {**ROLES, "judge_calibration": 5}})
    stats = generate_tool_data(cfg, seed=0, backends={"judge-model": AlwaysPass()})[2]
    picked = [j for s in plan_tool_data(cfg, seed=0).shards for j in s.env_jobs if j.calibrate]
    assert len(picked) == 5 and calibration_jobs(12, 5) == {0, 2, 4, 7, 9} and calibration_jobs(3, 5) == {0, 1, 2}
    truth = [judge_episode(j.task, rollout_env(j.task, cfg, f"0:{j.task.task_id}:{j.index}", j.persona)[0], j.gold_hash).passed
             for j in picked]
    passing = sum(truth)
    assert 0 < passing < len(truth)  # both kinds are scored
    assert stats["judge_calibration"] == {
        "scored": 5, "agreement": passing / 5, "precision": passing / 5, "recall": 1.0, "state_pass_rate": passing / 5,
        "judge_pass_rate": 1.0, "confusion": {"tp": passing, "fp": 5 - passing, "fn": 0, "tn": 0}}
    sharded = generate_tool_data(cfg.model_copy(update={"num_shards": 3}), seed=0, backends={"judge-model": AlwaysPass()})[2]
    assert sharded["judge_calibration"] == stats["judge_calibration"] and "llm_agent" not in stats
    off = generate_tool_data(AgenticConfig(**{**CI, "num_tasks": 8, "roles": ROLES}), seed=0, backends={"judge-model": AlwaysPass()})[2]
    assert "judge_calibration" not in off
