"""Rewards: the task side, same plug-in shape as guards. ``make_reward(spec)`` builds one.

Specs: a :class:`Reward` or any callable ``fn(prompts, responses) -> values``; a registered name
(``"relevance"``, ``"repetition"``, ``"coherence"``); a weighted sum such as ``"relevance+0.5*repetition"``; a
``"package.module:attr"`` string naming any of these (a class is called with no arguments).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from latentguard.common.plugins import import_object
from latentguard.rewards.base import CallableReward, Reward, WeightedSum, check_reward
from latentguard.rewards.text import CoherenceReward, RelevanceReward, RepetitionReward

REWARDS: dict[str, Callable[[], Reward]] = {"relevance": RelevanceReward, "repetition": RepetitionReward,
                                            "coherence": CoherenceReward}
"""Registered reward names -> factory."""

_TERM = re.compile(r"^\s*(?:([-+]?\d*\.?\d+)\s*\*\s*)?([\w.:]+)\s*$")


def make_reward(spec: Any) -> Reward:
    """Build a reward from a spec (see the module docstring)."""
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, str):
        if spec in REWARDS:
            return REWARDS[spec]()
        if "+" in spec or "*" in spec:
            terms = []
            for part in spec.split("+"):
                match = _TERM.match(part)
                if not match:
                    raise ValueError(f"cannot read reward term {part!r} in {spec!r}; write e.g. 'relevance+0.5*repetition'")
                weight, name = match.groups()
                terms.append((float(weight) if weight else 1.0, make_reward(name)))
            return WeightedSum(terms)
        if ":" not in spec:
            raise ValueError(f"unknown reward {spec!r}: use one of {sorted(REWARDS)}, a sum like "
                             "'relevance+0.5*repetition', or a 'package.module:attr' string")
        obj = import_object(spec, "reward")
        if isinstance(obj, type) and issubclass(obj, Reward):
            return obj()
        return make_reward(obj)
    if callable(spec):
        return CallableReward(spec)
    raise TypeError(f"reward must be a Reward, a callable, a name or a 'module:attr' string, got {spec!r}")


__all__ = ["REWARDS", "CallableReward", "CoherenceReward", "RelevanceReward", "RepetitionReward", "Reward", "WeightedSum",
           "check_reward", "make_reward"]
