"""The registry of decoding methods that ``evaluate.py --methods`` and :func:`make_method` understand.

A method spec is ``name`` or ``name:key=value:key=value`` (e.g. ``best-of-n:n=8``, ``beam:k=2``);
each option is checked against the method's constructor: an unknown option or a value of the wrong
type is an error naming the method, the option and the valid options. A spec may also be a
``"package.module:attr"`` string naming a :class:`~latentguard.agents.base.Method` subclass or
instance (your own method; the module must be importable), or a :class:`Method` object.

>>> make_method("care:b=20:N=1").config.buffer
20
>>> sorted(method_options("beam"))
['batch_size', 'k']
"""

from __future__ import annotations

import inspect
from typing import Any

from latentguard.agents.base import Method
from latentguard.agents.baselines import BeamSearch, BestOfN, BestOfNLagrangian, Sampling
from latentguard.agents.care import Care
from latentguard.agents.learned_care import LearnedCare
from latentguard.agents.search import BeamSaute, CriticSearch
from latentguard.common.plugins import import_object

METHODS: dict[str, tuple[type[Method], dict[str, Any]]] = {
    "vanilla": (Sampling, {"greedy": False}),
    "greedy": (Sampling, {"greedy": True}),
    "best-of-n": (BestOfN, {}),
    "beam": (BeamSearch, {}),
    "care": (Care, {"name": "care"}),
    "care-resample": (Care, {"name": "care-resample", "intervention": "resample"}),
    "care-lite": (Care, {"name": "care-lite", "single": True}),
    "critic-search": (CriticSearch, {}),
    "beam-saute": (BeamSaute, {}),
    "best-of-n-lagrangian": (BestOfNLagrangian, {}),
    "learned-care": (LearnedCare, {}),
}
"""Method name -> (class, the keyword arguments the name fixes). The spec's options are the class's
other constructor arguments (presets such as ``care-resample``'s intervention may be overridden)."""

_FIXED = ("name", "greedy")  # set by the registered name, never by a spec


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the class hierarchy."""
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        out.update({p.name: p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in out})
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def method_options(name: str) -> dict[str, Any]:
    """The options a registered method takes, with their defaults (``None``: the run's, or none)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {sorted(METHODS)}")
    cls, fixed = METHODS[name]
    return {k: fixed.get(k, p.default) for k, p in _parameters(cls).items() if k not in _FIXED}


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"best-of-n:n=8"`` -> ``("best-of-n", {"n": 8})`` (values read as int, then float, then bool, then text)."""
    name, *options = [part.strip() for part in spec.strip().split(":")]
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"cannot read option {option!r} of method {spec!r}; write name:key=value, e.g. best-of-n:n=8")
        kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def _checked(name: str, spec: str, key: str, value: Any, default: Any, options: dict[str, Any]) -> Any:
    """``value`` as the type of the option's default, or an error naming the method, option and fix."""
    listing = ", ".join(f"{k}={v!r}" for k, v in options.items())
    kind = type(default) if default is not None else None
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"method {name!r}: option {key}={value!r} must be true or false ({spec!r}); options: {listing}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"method {name!r}: option {key}={value!r} must be a whole number ({spec!r}); options: {listing}")
    if kind is float or (default is None and key in ("budget",)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"method {name!r}: option {key}={value!r} must be a number ({spec!r}); options: {listing}")
        return float(value)
    if kind is str:
        return str(value)
    return value


def make_method(spec: str | Method) -> Method:
    """Build a method from a spec (see the module docstring)."""
    if isinstance(spec, Method):
        return spec
    head, _, rest = spec.strip().partition(":")
    if head not in METHODS and rest and "=" not in rest.split(":")[0]:  # package.module:attr[:key=value ...]
        attr, *opts = rest.split(":")
        _, kwargs = parse_spec(":".join(["plugin", *opts]))
        obj = import_object(f"{head}:{attr}", "method")
        method = obj(**kwargs) if isinstance(obj, type) and issubclass(obj, Method) else obj
        if not isinstance(method, Method):
            raise ValueError(f"method {spec!r} names {obj!r}: give a subclass or an instance of "
                             "latentguard.agents.base.Method")
        if kwargs and not isinstance(obj, type):
            raise ValueError(f"method {spec!r} names an instance: options need a Method class")
        method.spec = spec
        return method
    name, kwargs = parse_spec(spec)
    options = method_options(name)
    unknown = [k for k in kwargs if k not in options]
    if unknown:
        raise ValueError(f"method {name!r} has no option {unknown[0]!r} ({spec!r}); its options: "
                         + ", ".join(f"{k}={v!r}" for k, v in options.items()))
    cls, fixed = METHODS[name]
    checked = {k: _checked(name, spec, k, v, options[k], options) for k, v in kwargs.items()}
    method = cls(**{**fixed, **checked})
    method.spec = spec
    return method
