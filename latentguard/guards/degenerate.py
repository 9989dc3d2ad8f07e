"""A degenerate-text guard: flags answers that are loops or symbol runs rather than language.

Small models fall into loops ("The 1970s in the 1970s, the 1970s in the 1970s, ...") and runs of
emoji, digits or URL fragments. Such text is not harmful, but it is not an answer either; as a member
of a composite guard (``any(latent-probe, degenerate)``) it lets CARE roll a degenerate span back and
resample it like an unsafe one. Risk = the larger of the share of word 3-grams that repeat an
earlier one and the share of non-space characters that are not letters: minus
:class:`latentguard.rewards.CoherenceReward`. Words of any script count as letters; code keeps most of its
characters letters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentguard.guards.base import Guard
from latentguard.rewards.text import CoherenceReward


class DegenerateGuard(Guard):
    """Risk = max(repeated word 3-gram share, non-letter share) of the response (prompt ignored)."""

    name = "degenerate"
    lineage = frozenset({"rule:degenerate-text"})
    threshold = 0.5

    def __init__(self, n: int = 3) -> None:
        self.coherence = CoherenceReward(n)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return -self.coherence(prompts, responses)  # (B,) in [0, 1]
