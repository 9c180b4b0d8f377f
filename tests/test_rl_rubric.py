"""Rubric files, the prescriptive detectors, the critic's verdict parser and the pairwise -> scalar rules."""

import math
from pathlib import Path

import pytest

from k2core.errors import UserError
from k2core.rl.rubric import (RUBRICS_DIR, RubricError, RubricRewardConfig, bradley_terry, bt_win_probabilities,
                              critic_messages, explicit_justification, load_library, load_rubric, opening_praise,
                              parse_verdict, rubric_rewards, select_rubrics, verdict_text, win_rates)

RULES = ["no_initial_praise", "no_explicit_justification"]


# --------------------------------------------------------------------------- rubric files


def test_repository_rubrics_load_with_every_kind():
    library = {r.name: r for r in load_library()}
    assert {r.kind for r in library.values()} == {"core", "prescriptive", "human"}
    assert [c.key for c in library["core"].criteria] == ["clarity_relevance", "fluency_engagement",
                                                          "objective_grounded"]
    assert {c.key: c.detector for c in library["prescriptive"].criteria} == {
        "no_initial_praise": "opening_praise", "no_explicit_justification": "explicit_justification"}
    assert all(r.version >= 1 for r in library.values())


def test_selection_by_context_tag():
    library = load_library()
    assert select_rubrics(library, []).fingerprint() == "core@1,prescriptive@1"
    assert select_rubrics(library, ["cooking"]).fingerprint() == "core@1,prescriptive@1,recipe_requests@1"
    assert select_rubrics(library, ["code_review", "recipe"]).fingerprint() == \
        "core@1,prescriptive@1,code_review@1,recipe_requests@1"
    assert select_rubrics(library, ["unrelated"]).fingerprint() == "core@1,prescriptive@1"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_CORE = "name: core\nversion: 1\nkind: core\ncriteria:\n  - {key: a_b, title: T, text: X}\n"


@pytest.mark.parametrize("text, expected", [
    ("name: core\nkind: core\ncriteria:\n  - {key: a, title: T, text: X}\n", "bad.version: required key is missing"),
    ("name: core\nversion: 1\nkind: rules\ncriteria:\n  - {key: a, title: T, text: X}\n", "bad.kind"),
    (GOOD_CORE + "colour: red\n", "bad.colour: unknown key"),
    ("name: core\nversion: 1\nkind: core\ncriteria:\n  - {key: a, title: T}\n", "bad.criteria.0.text"),
    ("name: p\nversion: 1\nkind: prescriptive\ncriteria:\n  - {key: a, title: T, text: X}\n", "detector must be"),
    ("name: p\nversion: 1\nkind: prescriptive\ncriteria:\n  - {key: a, title: T, text: X, detector: vibes}\n",
     "'vibes'"),
    ("name: h\nversion: 1\nkind: human\ncriteria:\n  - {key: a, title: T, text: X}\n", "contexts"),
    (GOOD_CORE.replace("criteria:", "contexts: [x]\ncriteria:"), "only human rubrics"),
    ("name: core\nversion: 0\nkind: core\ncriteria:\n  - {key: a, title: T, text: X}\n", "bad.version"),
    ("name: core\nversion: 1\nkind: core\ncriteria:\n  - {key: a, title: T, text: X}\n  - {key: a, title: U, text: Y}\n",
     "unique"),
    ("name: core\nversion: 1\nkind: core\ncriteria: [\n", "not valid YAML"),
    ("- just\n- a list\n", "a rubric file is a mapping"),
])
def test_invalid_rubric_names_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(RubricError) as caught:
        load_rubric(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_library_rejects_duplicate_names_and_empty_folder(tmp_path):
    with pytest.raises(RubricError, match="no rubric files"):
        load_library(tmp_path)
    _write(tmp_path, "a.yaml", GOOD_CORE)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "b.yaml", GOOD_CORE)
    with pytest.raises(RubricError, match="rubric name 'core' is also used by"):
        load_library(tmp_path)


def test_library_without_core_rubric_is_refused(tmp_path):
    prescriptive = load_rubric(RUBRICS_DIR / "prescriptive.yaml")
    with pytest.raises(RubricError, match="no core rubric"):
        select_rubrics([prescriptive], [])


# --------------------------------------------------------------------------- prescriptive detectors


@pytest.mark.parametrize("text", [
    "Great question! The capital of France is Paris.",
    "What an interesting idea. Let's look at it.",
    "You're absolutely right, the loop is off by one.",
    "**Excellent question!** Here is how it works.",
    "Wow, what a fascinating problem! First ...",
    "Thank you for such a thoughtful question. The answer is 4.",
    "I love this question. Photosynthesis ...",
])
def test_opening_praise_detected(text):
    assert opening_praise(text)


@pytest.mark.parametrize("text", [
    "The capital of France is Paris.",
    "Paris. It has been the capital since 987. Great question, by the way.",  # praise, but not the opening
    "A great deal of the energy comes from the sun.",
])
def test_opening_without_praise_passes(text):
    assert not opening_praise(text)


def test_opening_praise_only_looks_at_the_first_sentence():
    assert not opening_praise("Paris is the capital. Great question!")
    assert opening_praise("Great question! Paris is the capital.")


@pytest.mark.parametrize("text", [
    "Paris is the capital. I chose to keep this short because you asked for one fact.",
    "I've opted for a table here.",
    "I kept the list short so that it is easy to scan.",
    "This answer is structured to cover every step.",
    "My response fully meets your requirements.",
    "The reason I used recursion is clarity.",
])
def test_explicit_justification_detected(text):
    assert explicit_justification(text)


@pytest.mark.parametrize("text", [
    "Paris is the capital of France.",
    "You chose the right approach because the list is sorted.",
    "Use a table because the data are tabular.",
    "I think the answer is 12.",
])
def test_no_justification_passes(text):
    assert not explicit_justification(text)


# --------------------------------------------------------------------------- the critic prompt and its parser


def test_critic_prompt_holds_rubrics_prompt_and_both_responses_in_order():
    rubrics = select_rubrics(load_library(), ["cooking"])
    system, user = critic_messages(rubrics, "  How do I boil an egg? ", "Boil it 8 minutes.", "Fry it.")
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    for needle in ("Clarity and relevance", "Quantities and ordered steps", "no_initial_praise",
                   "no_explicit_justification", "How do I boil an egg?", "VERDICT: <A, B or TIE>"):
        assert needle in text
    assert text.index("# Response A\nBoil it 8 minutes.") < text.index("# Response B\nFry it.")


@pytest.mark.parametrize("reply, winner", [
    ("VIOLATIONS: none\nVERDICT: A", "A"),
    ("VERDICT: B", "B"),
    ("verdict: tie", "tie"),
    ("**Verdict:** A", "A"),
    ("Final verdict - Response B.", "B"),
    ("VERDICT: [A]", "A"),
    ("Verdict is B", "B"),
    ("Verdict: draw", "tie"),
    ("Verdict: equal", "tie"),
    ("  b.  ", "B"),
    ("Response A", "A"),
    ("VERDICT: A\n...on reflection...\nVERDICT: B", "B"),  # the last verdict counts
    ("VERDICT: A or B", None),
    ("VERDICT: A/B", None),
    ("Both responses are fine.", None),
    ("", None),
    ("VERDICT: ABSTAIN", None),
])
def test_parse_verdict_near_misses(reply, winner):
    assert parse_verdict(reply, RULES).winner == winner


def test_parse_violations():
    verdict = parse_verdict("VIOLATIONS: A: No initial praise, B:no_explicit_justification; B:made_up\nVERDICT: B",
                            RULES)
    assert verdict.violations == {("A", "no_initial_praise"), ("B", "no_explicit_justification")}
    assert parse_verdict("VIOLATIONS: none\nVERDICT: A", RULES).violations == frozenset()
    assert parse_verdict("Response b - no-initial-praise\nVERDICT: A", RULES).violations == frozenset()  # no label


def test_verdict_text_round_trips():
    text = verdict_text("B", [("B", "no_initial_praise"), ("A", "no_explicit_justification")])
    assert text == "VIOLATIONS: A:no_explicit_justification, B:no_initial_praise\nVERDICT: B"
    parsed = parse_verdict(text, RULES)
    assert parsed.winner == "B"
    assert parsed.violations == {("B", "no_initial_praise"), ("A", "no_explicit_justification")}


# --------------------------------------------------------------------------- pairwise -> scalar


def test_bt_two_players_without_prior_is_the_win_ratio():
    strengths = bradley_terry([[0, 3], [1, 0]], prior=0.0)
    assert strengths[0] / strengths[1] == pytest.approx(3.0, rel=1e-9)
    assert strengths[0] * strengths[1] == pytest.approx(1.0, rel=1e-9)  # geometric mean 1


def test_bt_with_prior_matches_hand_solution():
    # A beat B once, prior c = 1 against a strength-1 opponent. The stationarity equations give pi_B = 1/pi_A and
    # 2 = a^2/(a^2+1) + 2a/(a+1), i.e. a^3 - a^2 - 2 = 0 (real root 1.69562...).
    a, b = bradley_terry([[0, 1], [0, 0]], prior=1.0)
    assert a * b == pytest.approx(1.0, abs=1e-7)
    assert a ** 3 - a ** 2 - 2 == pytest.approx(0.0, abs=1e-7)
    assert a == pytest.approx(1.695620769559862, abs=1e-7)  # MM converges linearly; tol bounds the step


def test_bt_recovers_known_strengths_from_expected_counts():
    truth = [1.0, 2.0, 4.0]
    n = 12
    wins = [[n * truth[i] / (truth[i] + truth[j]) if i != j else 0.0 for j in range(3)] for i in range(3)]
    strengths = bradley_terry(wins, prior=0.0)
    assert strengths == pytest.approx([0.5, 1.0, 2.0], rel=1e-8)  # truth / geometric mean (2)


def test_bt_cycle_is_a_draw_and_prior_keeps_undefeated_finite():
    cycle = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert bradley_terry(cycle, prior=0.5) == pytest.approx([1.0, 1.0, 1.0], rel=1e-9)
    sweep = [[0, 1, 1], [0, 0, 1], [0, 0, 0]]  # 0 beats everyone, 2 loses to everyone
    strengths = bradley_terry(sweep, prior=0.5)
    assert all(math.isfinite(s) for s in strengths)
    assert strengths[0] > strengths[1] > strengths[2]
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry(sweep, prior=0.0, max_iter=200)


def test_win_rates_by_hand_and_ties_count_half():
    wins = [[0, 1, 0.5], [0, 0, 1], [0.5, 0, 0]]
    assert win_rates(wins) == pytest.approx([0.75, 0.5, 0.25])


@pytest.mark.parametrize("method", ["bradley_terry", "win_rate"])
def test_rubric_rewards_scales(method):
    wins = [[0, 1, 1, 1], [0, 0, 1, 0.5], [0, 0, 0, 1], [0, 0.5, 0, 0]]
    unit = rubric_rewards(wins, RubricRewardConfig(method=method, scale="unit"))
    centred = rubric_rewards(wins, RubricRewardConfig(method=method, scale="centred"))
    assert all(0.0 <= r <= 1.0 for r in unit)
    assert sum(centred) == pytest.approx(0.0, abs=1e-12)
    assert [u - c for u, c in zip(unit, centred)] == pytest.approx([sum(unit) / 4] * 4)
    assert unit[0] > unit[1] > unit[2] > unit[3]  # ordered by wins (3, 1.5, 1, 0.5)


def test_bt_win_probabilities_of_equal_strengths_are_half():
    assert bt_win_probabilities([2.0, 2.0, 2.0]) == pytest.approx([0.5, 0.5, 0.5])


def test_reward_input_errors():
    with pytest.raises(ValueError, match="square"):
        win_rates([[0, 1], [0]])
    with pytest.raises(ValueError, match="at least 2"):
        rubric_rewards([[0.0]], RubricRewardConfig())
    with pytest.raises(ValueError):
        RubricRewardConfig(method="elo")
