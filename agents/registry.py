"""The registry of decoding methods that ``evaluate.py --methods`` understands.

A method spec is ``name`` or ``name:key=value:key=value`` (e.g. ``best-of-n:n=8``, ``beam:k=2``);
values are read as int, then float, then kept as text. Later methods register themselves here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Method
from agents.baselines import BeamSearch, BestOfN, BestOfNLagrangian, Sampling
from agents.care import Care
from agents.learned_care import LearnedCare
from agents.search import BeamSaute, CriticSearch

METHODS: dict[str, Callable[..., Method]] = {
    "vanilla": lambda **kw: Sampling(greedy=False, **kw),
    "greedy": lambda **kw: Sampling(greedy=True, **kw),
    "best-of-n": BestOfN,
    "beam": BeamSearch,
    "care": lambda **kw: Care(**{"name": "care", **kw}),
    "care-resample": lambda **kw: Care(**{"name": "care-resample", "intervention": "resample", **kw}),
    "care-lite": lambda **kw: Care(**{"name": "care-lite", "single": True, **kw}),
    "critic-search": CriticSearch,
    "beam-saute": BeamSaute,
    "best-of-n-lagrangian": BestOfNLagrangian,
    "learned-care": LearnedCare,
}
"""Method name -> factory taking the spec's options as keyword arguments."""


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"best-of-n:n=8"`` -> ``("best-of-n", {"n": 8})``."""
    name, *options = [part.strip() for part in spec.strip().split(":")]
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"cannot read option {option!r} of method {spec!r}; write name:key=value, e.g. best-of-n:n=8")
        kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def make_method(spec: str | Method) -> Method:
    """Build a method from a spec (see the module docstring)."""
    if isinstance(spec, Method):
        return spec
    name, kwargs = parse_spec(spec)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {sorted(METHODS)}")
    try:
        method = METHODS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"method {spec!r}: {err}") from err
    method.spec = spec
    return method
