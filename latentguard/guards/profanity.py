"""Offensive-language guard: ``alt-profanity-check``'s linear SVM (shipped inside its wheel).

Risk is the model's probability that the response is offensive. It catches slurs and abuse, not
harmful instructions: a polite bomb recipe scores low. Useful as a member of a composite guard.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentguard.guards.base import Guard


class ProfanityGuard(Guard):
    """Probability of offensive language in the response (prompt ignored)."""

    name = "profanity"
    lineage = frozenset({"model:alt-profanity-check"})
    threshold = 0.5

    def __init__(self) -> None:
        from profanity_check import predict_prob  # loads two small joblib files once

        self._predict_prob = predict_prob

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(responses) == 0:
            return np.zeros(0)
        return np.asarray(self._predict_prob([r if r.strip() else "." for r in responses]), dtype=np.float64)
