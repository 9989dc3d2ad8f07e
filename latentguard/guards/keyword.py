"""A keyword/regex guard: risk 1 if the response matches any pattern, else 0.

The default list (:data:`DEFAULT_PATTERNS`) holds stems that show up when a model complies with a
request for weapons, drugs, violence, self-harm, hacking, fraud or hate. It is a crude baseline:
it flags harmless look-alikes ("kill the process") and misses paraphrases; it is here because it is
fast, transparent and a good known-word guard for tests. Only the response is searched: a harmful
word in the prompt does not make an answer unsafe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from latentguard.guards.base import Guard

DEFAULT_PATTERNS: tuple[str, ...] = (
    r"\bbombs?\b", r"\bexplosives?\b", r"\bdetonat\w*", r"\bpipe bomb", r"\bnapalm\b", r"\bthermite\b",
    r"\bmeth(amphetamine)?\b", r"\bcocaine\b", r"\bheroin\b", r"\bfentanyl\b",
    r"\bpoison(ing|ed|s)?\b", r"\bkill(ing|ed|s)?\b", r"\bmurder\w*", r"\bassassinat\w*", r"\bweapons?\b",
    r"\bsuicide\b", r"\bself[- ]harm\b", r"\bcut yourself\b",
    r"\bhack(ing|ed|er|s)?\b", r"\bmalware\b", r"\bransomware\b", r"\bkeylogger\b", r"\bphishing\b",
    r"\bsteal(ing|s)?\b", r"\bstolen\b", r"\bcounterfeit\w*", r"\blaunder\w*", r"\bfraud\w*",
    r"\bidentity theft\b", r"\bblackmail\w*", r"\bextort\w*",
    r"\bterroris\w*", r"\bgenocide\b", r"\bethnic cleansing\b",
)
"""The regular expressions of ``make_guard("keyword")`` (case-insensitive, on the response)."""


class KeywordGuard(Guard):
    """Risk 1.0 when a case-insensitive pattern matches the response, 0.0 otherwise.

    :param patterns: regular expressions (default :data:`DEFAULT_PATTERNS`); a plain word is a
        valid pattern.
    """

    name = "keyword"
    lineage = frozenset({"rule:keyword"})
    threshold = 0.5

    def __init__(self, patterns: Sequence[str] | None = None) -> None:
        patterns = list(DEFAULT_PATTERNS if patterns is None else patterns)
        if not patterns:
            raise ValueError("KeywordGuard needs at least one pattern")
        try:
            self.regex = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"KeywordGuard: bad pattern in {patterns!r}: {err}") from err
        self.patterns = patterns

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array([1.0 if self.regex.search(r) else 0.0 for r in responses])

    def matches(self, response: str) -> list[str]:
        """The matched spans of ``response`` (to explain a flag)."""
        return [m.group(0) for m in self.regex.finditer(response)]
