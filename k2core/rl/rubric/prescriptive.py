"""Cheap deterministic detectors for K2's prescriptive rubric (appendix F.2).

They catch the common surface forms of the two reward hacks, so that a violation loses even when the critic is
fooled by it; the critic's own violation flags (k2core.rl.rubric.critic) cover what the patterns miss.
- `opening_praise`: the response's opening sentence praises the user or the request ("Great question!",
  "What an interesting idea", "You're absolutely right").
- `explicit_justification`: the response explains its own choices or how well it meets the request ("I chose this
  format because ...", "I kept this answer short so ...", "This response is structured to ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable

_PRAISE_WORDS = (r"(?:great|excellent|fantastic|wonderful|brilliant|amazing|awesome|good|insightful|thoughtful|"
                 r"interesting|fascinating|superb|lovely|terrific)")
_PRAISED_THINGS = r"(?:question|point|idea|observation|query|thought|request|prompt|topic|problem)s?"
_OPENING_PRAISE = re.compile(
    r"^(?:(?:oh|wow|ah|ooh)[,!.]?\s+)?(?:"
    rf"(?:what|that'?s|that is|such|this is|it'?s|it is)\s+(?:an?\s+)?(?:really\s+|very\s+|truly\s+)?"
    rf"{_PRAISE_WORDS}\s+{_PRAISED_THINGS}"
    rf"|(?:really\s+|very\s+)?{_PRAISE_WORDS}\s+{_PRAISED_THINGS}"
    r"|(?:you'?re|you are)\s+(?:absolutely|totally|completely|so|exactly|quite)\s+right"
    r"|(?:great|excellent|awesome|brilliant|fantastic|love it|good one)\s*!"
    r"|i\s+(?:love|adore|really like)\s+(?:this|that|your)\s+" + _PRAISED_THINGS +
    r"|thanks?(?:\s+you)?\s+for\s+(?:such\s+)?(?:an?\s+|this\s+|the\s+|your\s+)?" + _PRAISE_WORDS +
    r")",
    re.IGNORECASE,
)
_OPENING = re.compile(r"^\s*(.{0,160}?(?:[.!?\n]|$))", re.DOTALL)

_SELF = r"(?:this|the|my)\s+(?:answer|response|reply|explanation|summary|list|format|structure)"
_JUSTIFICATION = re.compile(
    r"\bI(?:'ve| have)?\s+(?:chose|chosen|decided|opted|elected)\b"
    r"|\bI\s+(?:used|picked|went with|included|structured|organi[sz]ed|formatted|kept|wrote)\b[^.!?\n]{0,60}?"
    r"\b(?:because|since|so that|in order to|to make (?:it|this|the answer))\b"
    r"|\b(?:the|my)\s+reason\s+(?:I|for\s+(?:choosing|using|this))\b"
    rf"|\b{_SELF}\s+(?:is|was|has been)\s+(?:structured|written|designed|organi[sz]ed|formatted|kept)\b"
    rf"|\b{_SELF}\s+(?:fully\s+)?(?:meets|satisfies|addresses|fulfils|fulfills)\s+(?:your|the|all)\b"
    r"|\bI(?:'ll| will)\s+(?:keep|make)\s+(?:this|my|the)\s+(?:answer|response|reply)\b[^.!?\n]{0,30}?"
    r"\b(?:because|since|so)\b",
    re.IGNORECASE,
)


def opening_praise(response: str) -> bool:
    """True when the first sentence (at most 160 characters) of the response praises the user or the request."""
    match = _OPENING.match(response)
    opening = match.group(1).strip() if match else ""
    return bool(_OPENING_PRAISE.match(opening.lstrip("*_#> \"'")))


def explicit_justification(response: str) -> bool:
    """True when the response comments on its own choices or on how well it meets the request."""
    return bool(_JUSTIFICATION.search(response))


DETECTORS: dict[str, Callable[[str], bool]] = {
    "opening_praise": opening_praise,
    "explicit_justification": explicit_justification,
}
