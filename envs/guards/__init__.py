"""Guards: the pluggable cost side. ``make_guard(spec)`` turns a spec into a :class:`Guard`.

Specs: a :class:`Guard` object; a callable ``fn(prompts, responses) -> risks``; a registered name
(``"keyword"``, or ``"keyword:word1|word2"`` for your own patterns); a ``"package.module:attr"``
string naming any of these (a class or factory is called with no arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envs.guards.base import CallableGuard, Guard, check_risk
from envs.guards.keyword import DEFAULT_PATTERNS, KeywordGuard
from envs.plugins import import_object


def _keyword(arg: str | None) -> Guard:
    return KeywordGuard(arg.split("|") if arg else None)


GUARDS: dict[str, Callable[[str | None], Guard]] = {"keyword": _keyword}
"""Registered guard names -> factory taking the text after ``name:`` (or ``None``)."""


def make_guard(spec: Any) -> Guard:
    """Build a guard from a spec (see the module docstring)."""
    if isinstance(spec, Guard):
        return spec
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        if name in GUARDS:
            return GUARDS[name](arg or None)
        if ":" not in spec:
            raise ValueError(f"unknown guard {spec!r}: use one of {sorted(GUARDS)} or a 'package.module:attr' string")
        obj = import_object(spec, "guard")
        if isinstance(obj, type) and issubclass(obj, Guard):
            return obj()
        return make_guard(obj)
    if callable(spec):
        return CallableGuard(spec)
    raise TypeError(f"guard must be a Guard, a callable, a name or a 'module:attr' string, got {spec!r}")


__all__ = ["DEFAULT_PATTERNS", "GUARDS", "CallableGuard", "Guard", "KeywordGuard", "check_risk", "make_guard"]
