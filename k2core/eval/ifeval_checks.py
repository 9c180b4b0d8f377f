"""IFEval's 25 verifiable instructions, checked as lm-eval's `ifeval` task checks them.

A checker takes the response and the instruction's kwargs (None values dropped, plus `prompt`)
and returns None when the instruction is followed, else a short reason. Rules follow
lm-eval 0.4.13 `tasks/ifeval/instructions.py` (itself Google's IFEval code); the code is ours.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import langdetect

from k2core.eval.ifeval_text import count_words, punkt_sentences, word_tokens

Kwargs = Mapping[str, Any]
Checker = Callable[[str, Kwargs], "str | None"]

# langdetect is randomised; a fixed seed makes a response's language (and so its score) stable.
langdetect.DetectorFactory.seed = 0

_LESS, _AT_LEAST = "less than", "at least"


def need(ok: bool, why: str) -> str | None:
    """None when `ok`, else the reason `why` (the checkers' return convention)."""
    return None if ok else why


def compare(actual: float, relation: str, bound: float, what: str) -> str | None:
    """IFEval's two relations: 'less than' is strict, 'at least' inclusive."""
    if relation == _LESS:
        return need(actual < bound, f"{actual:g} {what}, needs fewer than {bound:g}")
    if relation == _AT_LEAST:
        return need(actual >= bound, f"{actual:g} {what}, needs at least {bound:g}")
    raise ValueError(f"relation must be {_LESS!r} or {_AT_LEAST!r}, got {relation!r}")


def _language(text: str) -> str | None:
    """langdetect's language code, or None when it cannot tell (IFEval then counts the check as passed)."""
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def response_language(value: str, kw: Kwargs) -> str | None:
    found = _language(value)
    return need(found in (None, kw["language"]), f"language detected as {found}, not {kw['language']}")


def number_sentences(value: str, kw: Kwargs) -> str | None:
    return compare(len(punkt_sentences(value)), kw["relation"], int(kw["num_sentences"]), "sentences")


def number_placeholders(value: str, kw: Kwargs) -> str | None:
    found = len(re.findall(r"\[.*?\]", value))
    return need(found >= int(kw["num_placeholders"]), f"{found} [placeholders], needs {kw['num_placeholders']}")


def number_bullet_lists(value: str, kw: Kwargs) -> str | None:
    stars = re.findall(r"^\s*\*[^\*].*$", value, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", value, flags=re.MULTILINE)
    found = len(stars) + len(dashes)
    return need(found == int(kw["num_bullets"]), f"{found} bullet points, needs exactly {kw['num_bullets']}")


_CONSTRAINED = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def constrained_response(value: str, kw: Kwargs) -> str | None:
    return need(any(option in value.strip() for option in _CONSTRAINED), "none of the 'My answer is ...' options")


def number_highlighted_sections(value: str, kw: Kwargs) -> str | None:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", value) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", value) if h[2:-2].strip()]
    found = len(single) + len(double)
    return need(found >= int(kw["num_highlights"]), f"{found} *highlighted* sections, needs {kw['num_highlights']}")


def multiple_sections(value: str, kw: Kwargs) -> str | None:
    found = len(re.split(r"\s?" + kw["section_spliter"] + r"\s?\d+\s?", value)) - 1
    return need(found >= int(kw["num_sections"]), f"{found} '{kw['section_spliter']} N' sections, "
                                                   f"needs {kw['num_sections']}")


def _blank_inside(parts: list[str]) -> bool:
    """A blank part anywhere but the ends (an empty paragraph between two dividers)."""
    return any(not p.strip() for p in parts[1:-1])


def number_paragraphs(value: str, kw: Kwargs) -> str | None:
    parts = re.split(r"\s?\*\*\*\s?", value)
    if _blank_inside(parts):
        return "an empty paragraph between *** dividers"
    found = sum(1 for p in parts if p.strip())
    return need(found == int(kw["num_paragraphs"]), f"{found} ***-separated paragraphs, needs {kw['num_paragraphs']}")


_PS_PATTERNS = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}


def postscript(value: str, kw: Kwargs) -> str | None:
    marker = kw["postscript_marker"]
    pattern = _PS_PATTERNS.get(marker, r"\s*" + marker.lower() + r".*$")
    return need(bool(re.findall(pattern, value.lower(), flags=re.MULTILINE)), f"no postscript starting {marker!r}")


def keyword_existence(value: str, kw: Kwargs) -> str | None:
    missing = [k for k in kw["keywords"] if not re.search(k, value, flags=re.IGNORECASE)]
    return need(not missing, f"missing keywords {missing}")


def keyword_frequency(value: str, kw: Kwargs) -> str | None:
    found = len(re.findall(kw["keyword"].strip(), value, flags=re.IGNORECASE))
    return compare(found, kw["relation"], int(kw["frequency"]), f"times {kw['keyword']!r}")


def number_words(value: str, kw: Kwargs) -> str | None:
    return compare(count_words(value), kw["relation"], int(kw["num_words"]), "words")


_FENCES = ("```json", "```Json", "```JSON", "```")


def json_format(value: str, kw: Kwargs) -> str | None:
    text = value.strip()
    for fence in _FENCES:  # each prefix is removed at most once, in this order, as IFEval does
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    return None


def nth_paragraph_first_word(value: str, kw: Kwargs) -> str | None:
    paragraphs = value.split("\n\n")
    found = sum(1 for p in paragraphs if p.strip())
    nth = int(kw["nth_paragraph"])
    if nth > found:
        return f"{found} paragraphs, no paragraph {nth}"
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return f"paragraph {nth} is empty"
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()
    want = kw["first_word"].lower()
    if found != int(kw["num_paragraphs"]):
        return f"{found} paragraphs, needs {kw['num_paragraphs']}"
    return need(first == want, f"paragraph {nth} starts with {first!r}, not {want!r}")


def forbidden_words(value: str, kw: Kwargs) -> str | None:
    used = [w for w in sorted(set(kw["forbidden_words"])) if re.search(r"\b" + w + r"\b", value, flags=re.IGNORECASE)]
    return need(not used, f"uses forbidden words {used}")


def two_responses(value: str, kw: Kwargs) -> str | None:
    parts = value.split("******")
    if _blank_inside(parts):
        return "an empty response between ****** separators"
    answers = [p for p in parts if p.strip()]
    if len(answers) != 2:
        return f"{len(answers)} responses separated by ******, needs 2"
    return need(answers[0].strip() != answers[1].strip(), "the two responses are identical")


def repeat_prompt(value: str, kw: Kwargs) -> str | None:
    prompt = kw["prompt_to_repeat"].strip().lower()
    return need(value.strip().lower().startswith(prompt), "does not start by repeating the request")


def end_checker(value: str, kw: Kwargs) -> str | None:
    phrase = kw["end_phrase"].strip().lower()
    return need(value.strip().strip('"').lower().endswith(phrase), f"does not end with {kw['end_phrase']!r}")


def title(value: str, kw: Kwargs) -> str | None:
    titles = re.findall(r"<<[^\n]+>>", value)
    return need(any(t.lstrip("<").rstrip(">").strip() for t in titles), "no <<title>>")


def letter_frequency(value: str, kw: Kwargs) -> str | None:
    letter = kw["letter"].strip().lower()
    found = collections.Counter(value.lower())[letter]
    return compare(found, kw["let_relation"], int(kw["let_frequency"]), f"times the letter {letter!r}")


def _english_case(value: str, is_case: bool, case: str) -> str | None:
    if not is_case:
        return f"not all {case}"
    found = _language(value)
    return need(found in (None, "en"), f"language detected as {found}, not en")


def english_capital(value: str, kw: Kwargs) -> str | None:
    return _english_case(value, value.isupper(), "capital letters")


def english_lowercase(value: str, kw: Kwargs) -> str | None:
    return _english_case(value, value.islower(), "lowercase")


def no_comma(value: str, kw: Kwargs) -> str | None:
    return need("," not in value, "contains a comma")


def capital_word_frequency(value: str, kw: Kwargs) -> str | None:
    found = sum(1 for token in word_tokens(value) if token.isupper())
    return compare(found, kw["capital_relation"], int(kw["capital_frequency"]), "ALL-CAPS words")


def quotation(value: str, kw: Kwargs) -> str | None:
    text = value.strip()
    return need(len(text) > 1 and text[0] == '"' and text[-1] == '"', 'not wrapped in "double quotes"')


IFEVAL_CHECKERS: dict[str, Checker] = {
    "keywords:existence": keyword_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:number_words": number_words,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
}
