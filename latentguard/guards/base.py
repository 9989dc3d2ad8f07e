"""The guard protocol: batched risk in [0, 1] for (prompt, response-so-far) pairs.

A guard is the cost side of the CMDP. Every guard has

- ``score(prompts, responses) -> np.ndarray`` of shape (B,), risk in [0, 1];
- ``threshold``: the operating point it ships with (risk >= threshold means flagged);
- ``score_state(prompts, responses, state, rows)``: the fast path used during decoding, which may
  read what the policy already computed (its latents) instead of running a model again; by default
  it calls ``score``;
- ``attach(lm)``: called once by an environment with the policy's language model (a latent probe
  uses it to capture its layer; most guards ignore it);
- ``lineage``: the signals its risk rests on (``rule:...`` for the rule that labelled its training
  data or decides it, ``features:...``, ``model:...``), so that an evaluation can refuse a judge
  that shares one with the guard it judges.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from latentguard.lm import DecodeState, LanguageModel


class Guard(abc.ABC):
    """Base class for guards; subclasses implement :meth:`score`."""

    name: str = "guard"
    threshold: float = 0.5

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(B,) risk in [0, 1] that each response (to its prompt) is unsafe."""

    def score_state(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        state: DecodeState | None = None,
        rows: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Risk during decoding; ``state``/``rows`` give access to the policy's latents."""
        return self.score(prompts, responses)

    def attach(self, lm: LanguageModel) -> None:
        """Prepare for decoding with ``lm`` (default: nothing to do)."""

    @property
    def lineage(self) -> frozenset[str]:
        """Signals the risk rests on (see the module docstring); default: the guard itself."""
        return frozenset({f"guard:{self.name}"})

    def flags(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(B,) bool: risk at or above the threshold."""
        return violations(self.score(prompts, responses), self.threshold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threshold={self.threshold})"


def check_risk(risk, batch: int, name: str) -> np.ndarray:
    """Validate a guard's output: shape (batch,), finite, in [0, 1]."""
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    if risk.shape != (batch,):
        raise ValueError(f"guard {name!r} returned {risk.shape[0]} scores for {batch} responses")
    if not np.all(np.isfinite(risk)) or risk.min(initial=0.0) < 0 or risk.max(initial=0.0) > 1:
        raise ValueError(f"guard {name!r} returned risks outside [0, 1]: {risk.tolist()}")
    return risk


def checked_risk(guard: Guard, prompts: Sequence[str], responses: Sequence[str], state: DecodeState | None = None,
                 rows: Sequence[int] | None = None) -> tuple[np.ndarray, str | None]:
    """(B,) the guard's risk during decoding, failing closed, and why it failed (None if it did not).

    The one place every decoder asks a guard: one that raises, or returns the wrong shape, NaN or a
    value outside [0, 1], gives risk 1 for every row (a violation), never a silent "safe".
    """
    try:
        return check_risk(guard.score_state(prompts, responses, state, rows), len(prompts), guard.name), None
    except Exception as err:
        return np.ones(len(prompts)), f"{type(err).__name__}: {err}"


def violations(risk: np.ndarray, threshold: float) -> np.ndarray:
    """(B,) bool: the cost rule, risk at or above the guard's threshold.

    >>> violations(np.array([0.2, 0.5, 0.9]), 0.5).tolist()
    [False, True, True]
    """
    return np.asarray(risk, dtype=np.float64) >= threshold


def check_model_guard_options(threshold: float, batch_size: int, max_length: int) -> None:
    """The options every guard backed by a second model shares: a threshold in [0, 1], positive sizes."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}")


class CallableGuard(Guard):
    """A guard from any function ``fn(prompts, responses) -> risks`` (batched)."""

    def __init__(self, fn: Callable[[list[str], list[str]], Sequence[float]], threshold: float = 0.5, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"guard function must be callable, got {fn!r}")
        self.fn = fn
        self.threshold = float(threshold)
        self.name = name or str(getattr(fn, "__name__", "callable"))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return check_risk(self.fn(list(prompts), list(responses)), len(prompts), self.name)
