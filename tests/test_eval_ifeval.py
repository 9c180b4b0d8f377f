"""Our IFEval/IFBench checkers: a passing and a failing response per instruction, near-misses,
strict vs loose, the loader and aggregation, and constructed responses that satisfy IFBench's prompts."""

from __future__ import annotations

import json

import pytest

from k2core.eval.ifeval import (
    CHECKERS,
    Record,
    aggregate,
    check_instruction,
    check_response,
    load_ifbench,
    load_records,
    loose_variants,
)
from k2core.eval.ifeval_ifbench_checks import UNSUPPORTED

_CAPITALS = ("Reykjavik Helsinki Oslo Tallinn Stockholm Riga Moscow Copenhagen Vilnius Minsk Dublin Berlin Amsterdam "
             "Warsaw London Brussels Prague Luxembourg Paris Vienna Bratislava Budapest Vaduz Chisinau Bern Ljubljana "
             "Zagreb").split()
_NAMES = ("Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte Alexander Amelia Benjamin "
          "Harper Leo Zoe Daniel Chloe Samuel Lily Matthew Grace Owen Abigail Gabriel Ella Jacob").split()


def _mcq() -> str:
    blocks = []
    for i in range(1, 5):
        options = "\n".join(f"{letter}) option{letter}" for letter in "ABCDE")
        blocks.append(f"Question {i}: Who painted work{'x' * i}?\n{options}")
    return "\n".join(blocks)


def _overlap(kw: dict) -> str:
    """The reference text, then enough fresh characters (each trigram new) to bring the overlap to the target."""
    ref = kw["reference_text"]
    shared = len({ref[i:i + 3] for i in range(len(ref) - 2)})
    fresh = round(shared * (100 - kw["percentage"]) / kw["percentage"])  # each fresh character adds one trigram
    return ref + "".join(chr(0x4E00 + i) for i in range(max(fresh, 0)))


def _sentences_growing(step: int) -> str:
    return " ".join(" ".join(["go"] * (1 + k * step)) + "." for k in range(3))


def _keywords_multiple(kw: dict) -> str:
    return " ".join(" ".join([kw[f"keyword{i}"]] * n) for i, n in zip(range(1, 6), (1, 2, 3, 5, 7)))


# A response that follows the instruction, built from its kwargs.
PASSING = {
    "count:word_count_range": lambda k: " ".join(["word"] * k["min_words"]),
    "count:unique_word_count": lambda k: " ".join(f"word{i}" for i in range(k["N"])),
    "ratio:stop_words": lambda k: "Quantum physics explains particles.",
    "ratio:sentence_type": lambda k: "It rains. It pours. Why?",
    "ratio:sentence_balance": lambda k: "It rains. Why? Wow!",
    "count:conjunctions": lambda k: "tea and milk but not sugar for me nor you or them so yet",
    "count:person_names": lambda k: ", ".join(_NAMES[:k["N"]]),
    "ratio:overlap": _overlap,
    "count:numbers": lambda k: "Numbers " + " ".join(str(i) for i in range(1, k["N"] + 1)),
    "words:alphabet": lambda k: "Apples bring cats dogs eagerly.",
    "words:vowel": lambda k: "A bad cat.",
    "words:consonants": lambda k: "Strong black craft.",
    "sentence:alliteration_increment": lambda k: "Big bad dogs. Silly snakes slither slowly.",
    "words:palindrome": lambda k: "level radar civic madam refer kayak rotor stats tenet racecar",
    "count:punctuation": lambda k: "Wait?! Yes, really; here: done. Wow! Why?",
    "format:parentheses": lambda k: "(a [b {c (d [e])}])",
    "format:quotes": lambda k: "\"a 'b \"c\" b' a\"",
    "words:prime_lengths": lambda k: "an ant ate seven",
    "format:options": lambda k: {"yes/no/maybe": "yes", "a), b), c), d)": "a)"}.get(k["options"], "I know"),
    "format:newline": lambda k: "one\ntwo\nthree",
    "format:emoji": lambda k: "I love pizza \U0001F355. The sun is out \U0001F31E.",
    "ratio:sentence_words": lambda k: "Cats nap. Dogs run. Bees hum.",
    "count:words_japanese": lambda k: " ".join("\u732b" if (i + 1) % k["N"] == 0 else "word" for i in range(3 * k["N"])),
    "words:repeats": lambda k: "one two three",
    "sentence:keyword": lambda k: "Filler here. " * (k["N"] - 1) + f"This has {k['word']}.",
    "count:pronouns": lambda k: " ".join(["they"] * k["N"]),
    "words:odd_even_syllables": lambda k: "cat apple dog water",
    "words:last_first": lambda k: "I like tea. Tea is hot. Hot days.",
    "words:paragraph_last_first": lambda k: "Love is all you need love\nTime flies over time",
    "sentence:increment": lambda k: _sentences_growing(k["small_n"]),
    "words:no_consecutive": lambda k: "Apples bring cats.",
    "format:line_indent": lambda k: "a\n b\n  c",
    "format:quote_unquote": lambda k: '"To be" means existence.',
    "format:list": lambda k: f"{k['sep']} one\n{k['sep']} two",
    "format:thesis": lambda k: "<i>Thesis here.</i> Supporting text.",
    "format:sub-bullets": lambda k: "* Point\n  - detail\n* Second\n  - more",
    "format:no_bullets_bullets": lambda k: "First sentence. Second sentence.\n* a\n* b",
    "custom:multiples": lambda k: "14, 21, 28, 35, 42, 49",
    "custom:mcq_count_length": lambda k: _mcq(),
    "custom:reverse_newline": lambda k: "\n".join(["Zimbabwe"] + sorted((f"Land {i:02d}" for i in range(53)),
                                                                         reverse=True)),
    "custom:word_reverse": lambda k: "eagle bald the is symbol national The",
    "custom:character_reverse": lambda k: "elgaE dlaB",
    "custom:sentence_alphabet": lambda k: " ".join(f"{chr(65 + i)}alpha goes." for i in range(26)),
    "custom:european_capitals_sort": lambda k: ", ".join(_CAPITALS),
    "custom:csv_city": lambda k: "ID,Country,City,Year,Count\n" + "\n".join(f"{i},France,Paris,2020,{i}"
                                                                            for i in range(7)),
    "custom:csv_special_character": lambda k: "ProductID,Category,Brand,Price,Stock\n" + "\n".join(
        f'{i},Toys,{"Acme & Co" if i == 3 else "Acme"},9.99,5' for i in range(14)).replace("Acme & Co", '"Acme & Co"'),
    "custom:csv_quotes": lambda k: "\n".join("\t".join(f'"{f}"' for f in row) for row in (
        ["StudentID", "Subject", "Grade", "Semester", "Score"], *[[str(i), "Math", "A", "Fall", "90"] for i in range(3)])),
    "custom:date_format_list": lambda k: "1796-04-12, 1805-12-02",
    "count:keywords_multiple": _keywords_multiple,
    "words:keywords_specific_position": lambda k: "Filler here. " * (k["n"] - 1) + " ".join(
        ["w"] * (k["m"] - 1) + [k["keyword"]]) + ".",
    "words:words_position": lambda k: f"The {k['keyword']} sky, truly {k['keyword']}.",
    "repeat:repeat_change": lambda k: "Changed " + " ".join(k["prompt_to_repeat"].split()[1:]),
    "repeat:repeat_simple": lambda k: "Only output this sentence here, ignore all other requests.",
    "repeat:repeat_span": lambda k: " ".join(k["prompt_to_repeat"].split()[k["n_start"]:k["n_end"]]),
    "format:title_case": lambda k: "The Quick Brown Fox",
    "format:output_template": lambda k: "My Answer: x My Conclusion: y Future Outlook: z",
    "format:no_whitespace": lambda k: "nowhitespace",
    # IFEval
    "keywords:existence": lambda k: "The model reads " + " ".join(k["keywords"]),
    "keywords:frequency": lambda k: " ".join([k["keyword"]] * (k["frequency"] if k["relation"] == "at least" else 0)
                                             + ["filler"]),
    "keywords:forbidden_words": lambda k: "A clean sentence.",
    "keywords:letter_frequency": lambda k: k["letter"] * k["let_frequency"],
    "language:response_language": lambda k: "Das ist ein kurzer deutscher Satz über das Wetter in Berlin.",
    "length_constraints:number_sentences": lambda k: "One. Two. Three.",
    "length_constraints:number_paragraphs": lambda k: "\n***\n".join(["Para."] * k["num_paragraphs"]),
    "length_constraints:number_words": lambda k: " ".join(["word"] * k["num_words"]),
    "length_constraints:nth_paragraph_first_word": lambda k: "\n\n".join(
        f"{k['first_word'].title() if i + 1 == k['nth_paragraph'] else 'Other'} text." for i in range(k["num_paragraphs"])),
    "detectable_content:number_placeholders": lambda k: "Dear [name], at [address].",
    "detectable_content:postscript": lambda k: f"Body.\n{k['postscript_marker']} see you",
    "detectable_format:number_bullet_lists": lambda k: "\n".join(["* item"] * k["num_bullets"]),
    "detectable_format:constrained_response": lambda k: "My answer is maybe.",
    "detectable_format:number_highlighted_sections": lambda k: " ".join(["*part*"] * k["num_highlights"]),
    "detectable_format:multiple_sections": lambda k: "\n".join(f"{k['section_spliter']} {i}\ntext"
                                                               for i in range(1, k["num_sections"] + 1)),
    "detectable_format:json_format": lambda k: '```json\n{"a": 1}\n```',
    "detectable_format:title": lambda k: "<<My Title>>\nBody",
    "combination:two_responses": lambda k: "First answer.\n******\nSecond answer.",
    "combination:repeat_prompt": lambda k: k["prompt_to_repeat"] + " Here is my answer.",
    "startend:end_checker": lambda k: f"Body text. {k['end_phrase']}",
    "startend:quotation": lambda k: '"All of it quoted."',
    "change_case:capital_word_frequency": lambda k: " ".join(["WORD"] * k["capital_frequency"]),
    "change_case:english_capital": lambda k: "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.",
    "change_case:english_lowercase": lambda k: "this is an english sentence about the weather today.",
    "punctuation:no_comma": lambda k: "No commas here.",
}

# kwargs for the instruction types that take them (IFBench's from its data's shapes, IFEval's from IFEval's).
KWARGS = {
    "count:word_count_range": {"min_words": 100, "max_words": 105},
    "count:unique_word_count": {"N": 36},
    "ratio:stop_words": {"percentage": 27},
    "count:conjunctions": {"small_n": 5},
    "count:person_names": {"N": 10},
    "ratio:overlap": {"percentage": 72, "reference_text": "Use induction to prove the following claims about graphs."},
    "count:numbers": {"N": 5},
    "format:options": {"options": "yes/no/maybe"},
    "count:words_japanese": {"N": 5},
    "words:repeats": {"small_n": 2},
    "sentence:keyword": {"N": 3, "word": "giraffe"},
    "count:pronouns": {"N": 7},
    "sentence:increment": {"small_n": 2},
    "format:list": {"sep": "!?!?"},
    "count:keywords_multiple": {f"keyword{i}": w for i, w in enumerate(["door", "bread", "blue", "lamp", "river"], 1)},
    "words:keywords_specific_position": {"keyword": "giggle", "n": 3, "m": 5},
    "words:words_position": {"keyword": "vibrant"},
    "repeat:repeat_change": {"prompt_to_repeat": "Write a python program to compress images."},
    "repeat:repeat_span": {"prompt_to_repeat": "how to find what value in a quadratic function lands", "n_start": 2,
                           "n_end": 5},
    "keywords:existence": {"keywords": ["river", "stone"]},
    "keywords:frequency": {"keyword": "data", "frequency": 3, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["bad", "evil"]},
    "keywords:letter_frequency": {"letter": "q", "let_frequency": 4, "let_relation": "at least"},
    "language:response_language": {"language": "de"},
    "length_constraints:number_sentences": {"num_sentences": 4, "relation": "less than"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "length_constraints:number_words": {"num_words": 100, "relation": "at least"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "hello"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 3},
    "combination:repeat_prompt": {"prompt_to_repeat": "Write a haiku about rain."},
    "startend:end_checker": {"end_phrase": "Is there anything else I can help with?"},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "at least"},
}

# A response that breaks the instruction (kwargs as in KWARGS).
FAILING = {
    "count:word_count_range": "too short", "count:unique_word_count": "same same same",
    "ratio:stop_words": "the and of a to in", "ratio:sentence_type": "It rains. Why? Why?",
    "ratio:sentence_balance": "It rains. It pours. Why?", "count:conjunctions": "and and and but",
    "count:person_names": "Emma and Liam", "ratio:overlap": "zzzz qqqq xxxx", "count:numbers": "1 2 3 4",
    "words:alphabet": "Apples cats", "words:vowel": "Education is unique.", "words:consonants": "A strong word",
    "sentence:alliteration_increment": "Silly snakes slither slowly. Big bad dogs.", "words:palindrome": "level radar",
    "count:punctuation": "Hello, world; yes: no. Wow!", "format:parentheses": "(a [b {c}])",
    "format:quotes": "\"a 'b' a\"", "words:prime_lengths": "an ant eats", "format:options": "yes, because it is",
    "format:newline": "one two\nthree", "format:emoji": "I love pizza. \U0001F355 is great",
    "ratio:sentence_words": "Cats nap. Dogs run far. Bees hum.", "count:words_japanese": "one two three four five",
    "words:repeats": "go go go", "sentence:keyword": "One. Two. Three has no animal.", "count:pronouns": "they them",
    "words:odd_even_syllables": "cat dog apple", "words:last_first": "I like tea. Coffee is hot.",
    "words:paragraph_last_first": "Love is all you need", "sentence:increment": "go. go go. go go go.",
    "words:no_consecutive": "Big bad dog.", "format:line_indent": "  a\n b\n  c", "format:quote_unquote": '"To be" "or not"',
    "format:list": "!?!? only one", "format:thesis": "<i></i> text", "format:sub-bullets": "* Point\n* Second\n  - more",
    "format:no_bullets_bullets": "One sentence.\n* a\n* b", "custom:multiples": "7, 14, 21, 28, 35, 42, 49",
    "custom:mcq_count_length": "Here are questions.\n" + _mcq(), "custom:reverse_newline": "Zimbabwe\nZambia",
    "custom:word_reverse": "The bald eagle", "custom:character_reverse": "bald eagle",
    "custom:sentence_alphabet": "Apple. Banana.", "custom:european_capitals_sort": ", ".join(reversed(_CAPITALS)),
    "custom:csv_city": "ID,Country,City\n1,France,Paris", "custom:csv_special_character": "ProductID,Category\n1,Toys",
    "custom:csv_quotes": "StudentID,Subject,Grade,Semester,Score\n1,Math,A,Fall,90",
    "custom:date_format_list": "1796-04-12, 12/02/1805", "count:keywords_multiple": "door bread blue lamp river",
    "words:keywords_specific_position": "Filler here. Filler here. w w w w other.",
    "words:words_position": "The vibrant sky, truly blue.", "repeat:repeat_change": "Write a python program to compress images.",
    "repeat:repeat_simple": "Here is the code you asked for.", "repeat:repeat_span": "how to find what",
    "format:title_case": "The quick Brown Fox", "format:output_template": "My Answer: x My Conclusion: y",
    "format:no_whitespace": "has whitespace",
    "keywords:existence": "only a river here", "keywords:frequency": "data data", "keywords:forbidden_words": "a bad day",
    "keywords:letter_frequency": "qqq", "language:response_language": "This is clearly an English sentence about rain.",
    "length_constraints:number_sentences": "One. Two. Three. Four.", "length_constraints:number_paragraphs": "A\n***\nB",
    "length_constraints:number_words": " ".join(["word"] * 99),
    "length_constraints:nth_paragraph_first_word": "Other text.\n\nGoodbye text.\n\nOther text.",
    "detectable_content:number_placeholders": "Dear [name].", "detectable_content:postscript": "Body. PS see you",
    "detectable_format:number_bullet_lists": "* a\n* b\n* c\n- d", "detectable_format:constrained_response": "Yes.",
    "detectable_format:number_highlighted_sections": "*one* only", "detectable_format:multiple_sections": "Section 1\nx\nSection 2",
    "detectable_format:json_format": "Here is JSON: {\"a\": 1}", "detectable_format:title": "<<>>\nNo title",
    "combination:two_responses": "Same.\n******\nSame.", "combination:repeat_prompt": "Here is a haiku about rain.",
    "startend:end_checker": "Is there anything else I can help with? Bye.", "startend:quotation": '"Half quoted.',
    "change_case:capital_word_frequency": "ONE TWO three", "change_case:english_capital": "THIS IS MOSTLY CAPS but not all.",
    "change_case:english_lowercase": "this is Not all lowercase.", "punctuation:no_comma": "Yes, a comma.",
}

SUPPORTED = sorted(set(CHECKERS) - set(UNSUPPORTED))


def test_every_instruction_has_cases():
    assert set(PASSING) | set(UNSUPPORTED) == set(CHECKERS) == set(FAILING) | set(UNSUPPORTED)
    assert len(CHECKERS) == 25 + 58


@pytest.mark.parametrize("iid", SUPPORTED)
def test_passing_response(iid):
    kw = KWARGS.get(iid, {})
    result = check_instruction(iid, kw, PASSING[iid](kw))
    assert (result.strict, result.loose, result.reason) == (True, True, "followed")


@pytest.mark.parametrize("iid", SUPPORTED)
def test_failing_response(iid):
    result = check_instruction(iid, KWARGS.get(iid, {}), FAILING[iid])
    assert not result.strict and result.reason and result.reason != "followed", result


def test_unsupported_instruction_is_reported_never_passed():
    record = Record("k", "p", ("words:start_verb", "format:no_whitespace"), ({}, {}))
    result = check_response(record, "Run")
    verb, space = result.instructions
    assert (verb.strict, verb.loose, verb.supported) == (False, False, False)
    assert "POS tagger" in verb.reason and space.strict
    assert aggregate([result])["unsupported_instructions"] == 1.0


@pytest.mark.parametrize("iid, kw, response, strict", [
    ("length_constraints:number_words", {"num_words": 100, "relation": "at least"}, " ".join(["w"] * 99), False),
    ("length_constraints:number_words", {"num_words": 100, "relation": "at least"}, " ".join(["w"] * 100), True),
    ("length_constraints:number_words", {"num_words": 100, "relation": "less than"}, " ".join(["w"] * 100), False),
    ("count:word_count_range", {"min_words": 24, "max_words": 28}, " ".join(["w"] * 29), False),
    # IFEval strips ```json fences before parsing; a fence with trailing prose is not JSON.
    ("detectable_format:json_format", {}, '```JSON\n[1, 2]\n```', True),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```\nHope this helps.', False),
    ("detectable_format:json_format", {}, '```python\n{"a": 1}\n```', False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n* c\n* d", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold**\n* a\n- b", True),
    # "**bold**" is one double highlight (its single-star matches are the empty "**" pairs).
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "**bold** only", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**bold** only", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "* * empty", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, '"Text. Any other questions?"', True),
    ("startend:quotation", {}, '"', False),
    ("punctuation:no_comma", {}, "Chinese comma \uff0c passes", True),
    ("combination:two_responses", {}, "A\n******\n\n******\nB", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nA\n***\nB\n***", True),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "concatenate", True),
    ("change_case:english_lowercase", {}, "ceci est une phrase en français sur la météo.", False),
    ("format:options", {"options": "a), b), c), d)"}, "A)", False),
    ("format:options", {"options": "I know or I don't know"}, "i don't know.", True),
    ("count:numbers", {"N": 1}, "3.14", True),
    ("words:words_position", {"keyword": "vibrant"}, "A Vibrant sky, so vibrant.", False),
    ("custom:date_format_list", {}, "1822-01-01", False),
    ("format:parentheses", {}, "(((((x)))]", True),
    ("format:parentheses", {}, "((((x))))", False),
])
def test_near_misses(iid, kw, response, strict):
    assert check_instruction(iid, kw, response).strict is strict


def test_loose_accepts_what_strict_rejects():
    # A preamble line breaks "start with the repeated prompt"; loose drops the first line.
    kw = {"prompt_to_repeat": "Write a haiku about rain."}
    result = check_instruction("combination:repeat_prompt", kw, "Sure!\nWrite a haiku about rain. Drops fall.")
    assert (result.strict, result.loose) == (False, True) and "first line removed" in result.reason
    # Markdown bold around the title-case words: loose removes the asterisks.
    result = check_instruction("startend:quotation", {}, '**"Quoted"**')
    assert (result.strict, result.loose) == (False, True) and "'*' removed" in result.reason
    # A trailing sign-off breaks the end phrase; loose drops the last line.
    kw = {"end_phrase": "Is there anything else I can help with?"}
    result = check_instruction("startend:end_checker", kw, "Body. Is there anything else I can help with?\n-- bot")
    assert (result.strict, result.loose) == (False, True)
    # Nothing rescues a response that has a comma on every line.
    result = check_instruction("punctuation:no_comma", {}, "a, b\nc, d\ne, f")
    assert (result.strict, result.loose) == (False, False)


def test_loose_variants_are_ifevals_eight():
    names = [name for name, _ in loose_variants("a*\nb\nc*")]
    texts = [text for _, text in loose_variants("a*\nb\nc*")]
    assert len(names) == 8 == len(set(names))
    assert texts == ["a*\nb\nc*", "a\nb\nc", "b\nc*", "a*\nb", "b", "b\nc", "a\nb", "b"]


def test_empty_response_follows_nothing():
    result = check_instruction("keywords:forbidden_words", {"forbidden_words": ["x"]}, "  \n ")
    assert (result.strict, result.loose, result.reason) == (False, False, "empty response")


def test_aggregate_prompt_and_instruction_level():
    a = Record("a", "p", ("punctuation:no_comma", "startend:quotation"), ({}, {}))
    b = Record("b", "p", ("punctuation:no_comma",), ({},))
    results = [check_response(a, '"no commas"'), check_response(a, "**no commas**"), check_response(b, "x, y")]
    assert aggregate(results) == {"prompt_strict": 1 / 3, "prompt_loose": 1 / 3, "inst_strict": 3 / 5,
                                  "inst_loose": 3 / 5, "prompts": 3.0, "instructions": 5.0,
                                  "unsupported_instructions": 0.0}
    with pytest.raises(ValueError, match="no IFEval results"):
        aggregate([])


def test_load_ifbench_full_and_seeded_subsets():
    records = load_ifbench()
    assert len(records) == 294 and len({r.key for r in records}) == 294
    ids = {i for r in records for i in r.instruction_ids}
    assert len(ids) == 57 and ids <= set(CHECKERS)
    assert all(None not in kw.values() for r in records for kw in r.kwargs)
    subset = load_ifbench(limit=20, seed=3)
    assert len(subset) == 20 and subset == load_ifbench(limit=20, seed=3) != load_ifbench(limit=20, seed=4)
    assert {r.key for r in subset} <= {r.key for r in records}


def test_load_records_errors_name_the_line(tmp_path):
    path = tmp_path / "input.jsonl"
    path.write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["nope:x"], "kwargs": [{}]}) + "\n")
    with pytest.raises(ValueError, match=r"input.jsonl:1: unknown instruction ids \['nope:x'\]"):
        load_records(path)
    path.write_text('{"key": 1, "prompt": "p"}\n')
    with pytest.raises(ValueError, match=r"input.jsonl:1: missing fields \['instruction_id_list', 'kwargs'\]"):
        load_records(path)
    row = {"key": 7, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"x": None}]}
    path.write_text(json.dumps(row) + "\n\n")
    assert load_records(path) == [Record("7", "p", ("punctuation:no_comma",), ({},))]


def test_constructed_responses_satisfy_ifbench_prompts():
    """For every IFBench prompt, a response built from its first instruction's kwargs follows that
    instruction; single-instruction prompts (all but start_verb ones) are then followed in full."""
    records = load_ifbench()
    followed = 0
    for record in records:
        iid = record.instruction_ids[0]
        kw = {k: int(v) if isinstance(v, float) else v for k, v in record.kwargs[0].items()}  # the data's 5.0s
        if iid in UNSUPPORTED:
            continue
        result = check_response(record, PASSING[iid](kw))
        assert result.instructions[0].strict, (record.key, iid, result.instructions[0].reason)
        if len(record.instruction_ids) == 1:
            assert result.strict
        followed += result.strict
    singles = sum(len(r.instruction_ids) == 1 and r.instruction_ids[0] not in UNSUPPORTED for r in records)
    assert followed >= singles >= 240


def test_ifbench_harness_task_scores_prompt_level_strict():
    from k2core.eval.harness import Output, TaskOptions
    from k2core.eval.registry import TASKS

    task = TASKS["ifbench"](TaskOptions(limit=294))
    by_key = {r.key: r for r in load_ifbench()}
    single = next(s for s in task.samples if len(by_key[s.id].instruction_ids) == 1
                  and by_key[s.id].instruction_ids[0] not in UNSUPPORTED)
    record = by_key[single.id]
    kw = {k: int(v) if isinstance(v, float) else v for k, v in record.kwargs[0].items()}
    good = task.scorer(single, Output(completion=PASSING[record.instruction_ids[0]](kw)))
    bad = task.scorer(single, Output(completion=""))
    assert (good.value, bad.value) == (1.0, 0.0) and "strict=True" in good.reason and "empty response" in bad.reason
    assert len(task.samples) == 294 and single.input == [{"role": "user", "content": record.prompt}]


def test_ifbench_harness_task_reports_ifevals_four_accuracies_as_aggregate_does(tmp_path):
    """The task's prompt- and instruction-level strict and loose figures equal `aggregate` over the same replies
    (instruction level pooled over instructions, not averaged per prompt); a refusal follows none of them."""
    from k2core.eval.harness import Output, TaskOptions, run_task
    from k2core.eval.registry import TASKS
    from k2core.llm import ChatResponse, Usage

    task = TASKS["ifbench"](TaskOptions(limit=60, seed=2))
    by_key = {r.key: r for r in load_ifbench()}

    class Echo:  # replies with the prompt, in bold when its length is odd: mixed strict and loose verdicts
        backend_id = "echo"

        def complete(self, request):
            text = request.messages[-1]["content"]
            reply = f"**{text}**" if len(text) % 2 else text
            return ChatResponse(message={"role": "assistant", "content": reply}, usage=Usage(prompt_tokens=1,
                                                                                              completion_tokens=1))

    result = run_task(task, Echo(), tmp_path, progress=False, resamples=100)
    replies = [(by_key[s.id], f"**{s.input[0]['content']}**" if len(s.input[0]["content"]) % 2
                else s.input[0]["content"]) for s in task.samples]
    expected = aggregate([check_response(record, reply) for record, reply in replies])
    got = {k: v.value for k, v in result.metrics.items()}
    assert got == pytest.approx({k: expected[k] for k in ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")})
    assert 0 < got["inst_strict"] < got["inst_loose"] and got["prompt_strict"] < got["inst_strict"]
    per_prompt = [sum(i.strict for i in check_response(r, t).instructions) / len(r.instruction_ids) for r, t in replies]
    assert got["inst_strict"] != pytest.approx(sum(per_prompt) / len(per_prompt))  # pooled, not a mean of shares
    refused = task.refusal(task.samples[0], Output(error="too long"))
    assert refused.value == 0.0 and refused.values["inst_loose"] == 0.0
    assert refused.values["instructions"] == len(by_key[task.samples[0].id].instruction_ids)
