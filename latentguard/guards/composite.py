"""Composite guards over several members.

- ``max(a, b, ...)``: the largest member risk after putting every member on a common scale in
  which its own threshold maps to 0.5 (piecewise linear: ``0.5 r / t`` below ``t``,
  ``0.5 + 0.5 (r - t) / (1 - t)`` above), so the composite flags exactly when some member flags,
  and its risk still orders answers;
- ``mean(a, b, ...)``: the mean of the members' risks on that common scale, so the members vote
  with their margins (a confident member outweighs an unsure one); the cascade's second stage can be
  ``mean(first, second)``, combining both reads of an uncertain row (McKenzie et al. 2025 found the
  combined score beats either alone);
- ``any(a, b, ...)``: 1 if any member flags (risk >= its threshold), else 0.

All have threshold 0.5, pass decoding latents through to members (``score_state``), and attach
every member to the policy model.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from latentguard.guards.base import Guard


def rescale(risk: np.ndarray, threshold: float) -> np.ndarray:
    """Map risk so that ``threshold`` becomes 0.5 (monotone, 0 -> 0, 1 -> 1)."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return np.where(risk < t, 0.5 * risk / t, 0.5 + 0.5 * (risk - t) / (1 - t))


class _Composite(Guard):
    threshold = 0.5
    kind: str  # the spec's name of the combination ("max", "any"), set by each subclass

    def __init__(self, members: Sequence[Guard]) -> None:
        if not members:
            raise ValueError(f"{type(self).__name__} needs at least one member guard")
        self.members = list(members)
        self.name = f"{self.kind}({','.join(m.name for m in self.members)})"

    @abc.abstractmethod
    def _combine(self, risks: list[np.ndarray]) -> np.ndarray:
        """(B,) composite risk from the members' risks."""

    def score(self, prompts, responses):
        return self._combine([m.score(prompts, responses) for m in self.members])

    def score_state(self, prompts, responses, state=None, rows=None):
        return self._combine([m.score_state(prompts, responses, state, rows) for m in self.members])

    @property
    def lineage(self) -> frozenset[str]:
        return frozenset().union(*(m.lineage for m in self.members))

    def attach(self, lm) -> None:
        for member in self.members:
            member.attach(lm)


class MaxGuard(_Composite):
    """Largest member risk on a common threshold scale (see module docstring)."""

    kind = "max"

    def _combine(self, risks):
        return np.max([rescale(np.asarray(r), m.threshold) for r, m in zip(risks, self.members)], axis=0)


class MeanGuard(_Composite):
    """Mean member risk on a common threshold scale (see module docstring)."""

    kind = "mean"

    def _combine(self, risks):
        return np.mean([rescale(np.asarray(r), m.threshold) for r, m in zip(risks, self.members)], axis=0)


class AnyGuard(_Composite):
    """1 if any member flags, else 0."""

    kind = "any"

    def _combine(self, risks):
        flags = [np.asarray(r) >= m.threshold for r, m in zip(risks, self.members)]
        return np.any(flags, axis=0).astype(np.float64)


def split_top_level(text: str) -> list[str]:
    """Split ``a,b(c,d),e`` at commas outside parentheses.

    >>> split_top_level("keyword, max(profanity,keyword:x|y), latent-probe")
    ['keyword', 'max(profanity,keyword:x|y)', 'latent-probe']
    """
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += (char == "(") - (char == ")")
        if depth < 0:
            raise ValueError(f"unbalanced parentheses in guard spec {text!r}")
        current.append(char)
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in guard spec {text!r}")
    parts.append("".join(current).strip())
    return [p for p in parts if p]
