"""The reward protocol: batched task reward for (prompt, response) pairs.

A reward is any object or function ``reward(prompts, responses) -> array of shape (B,)`` with
finite values. :class:`Reward` is the base class for built-ins; :class:`WeightedSum` adds several.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np


class Reward(abc.ABC):
    """Base class for rewards; subclasses implement :meth:`__call__`."""

    name: str = "reward"

    @abc.abstractmethod
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(B,) reward of each response to its prompt."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_reward(values, batch: int, name: str, prompts: Sequence[str] = ()) -> np.ndarray:
    """Validate a reward's output: shape (batch,), finite (NaN or inf is an error)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (batch,):
        raise ValueError(f"reward {name!r} returned {values.shape[0]} values for {batch} responses")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        where = f" for prompt {prompts[bad[0]]!r}" if len(prompts) > bad[0] else ""
        raise ValueError(f"reward {name!r} returned {values[bad[0]]}{where}; rewards must be finite numbers")
    return values


class CallableReward(Reward):
    """A reward from any function ``fn(prompts, responses) -> values``."""

    def __init__(self, fn: Callable[[list[str], list[str]], Sequence[float]], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"reward function must be callable, got {fn!r}")
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "callable"))

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return check_reward(self.fn(list(prompts), list(responses)), len(prompts), self.name, prompts)


class WeightedSum(Reward):
    """``sum_i w_i * reward_i``."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]) -> None:
        if not terms:
            raise ValueError("WeightedSum needs at least one reward")
        self.terms = list(terms)
        self.name = "+".join(f"{w:g}*{r.name}" if w != 1 else r.name for w, r in self.terms)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        total = np.zeros(len(prompts))
        for weight, reward in self.terms:
            total += weight * check_reward(reward(prompts, responses), len(prompts), reward.name, prompts)
        return total
