"""Guards: the pluggable cost side. ``make_guard(spec)`` turns a spec into a :class:`Guard`.

Specs:

- ``"keyword"`` (or ``"keyword:word1|word2"``): regular expressions on the response;
- ``"profanity"``: alt-profanity-check's offensive-language model;
- ``"degenerate"``: loops and symbol runs (:mod:`latentguard.guards.degenerate`), for composites such as
  ``"any(latent-probe, degenerate)"``;
- ``"latent-probe"`` / ``"latent-probe:PATH"``: a logistic head on the policy's own latents (zero
  extra forwards during decoding); without a path, the one trained for the policy model (user
  cache, else the one shipped; with neither, an error naming ``python train.py guard``);
- ``"embedding"`` / ``"embedding:PATH"``: a logistic head on MiniLM sentence embeddings;
- ``"model-probe:PATH"``: a probe on a second model's latents, which runs that model itself
  (:class:`latentguard.guards.probe.ModelProbe`, e.g. a cascade's second stage);
- ``"judge:MODEL"``: a Llama-Guard-style generative guard, P(unsafe verdict) from one forward;
- ``"classifier:MODEL"``: any ``AutoModelForSequenceClassification``;
- ``"llama-guard-3:MODEL"``, ``"shieldgemma:MODEL"``, ``"harmbench-cls:MODEL"``: published safety
  classifiers with their own prompt formats and verdict words (:mod:`latentguard.guards.safety_classifiers`);
- ``"any(a, b, ...)"`` / ``"max(a, b, ...)"`` / ``"mean(a, b, ...)"``: composites (:mod:`latentguard.guards.composite`);
- ``"cascade(a, b, low=L, high=H)"``: ``a`` on every check, ``b`` where ``a``'s risk is in ``[L, H)``
  (:mod:`latentguard.guards.cascade`);
- a :class:`Guard` object, a callable ``fn(prompts, responses) -> risks``, or a
  ``"package.module:attr"`` string naming any of these (a Guard class is instantiated).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from latentguard.common.plugins import import_object
from latentguard.guards.base import CallableGuard, Guard, check_risk, checked_risk, violations
from latentguard.guards.composite import AnyGuard, MaxGuard, MeanGuard, split_top_level
from latentguard.guards.defaults import DefaultGuard, load_trained_guard
from latentguard.guards.keyword import DEFAULT_PATTERNS, KeywordGuard


def _keyword(arg: str | None) -> Guard:
    return KeywordGuard(arg.split("|") if arg else None)


def _judge(arg: str | None) -> Guard:
    if not arg:
        raise ValueError("the judge guard needs a model: 'judge:MODEL', e.g. 'judge:meta-llama/Llama-Guard-3-1B'")
    from latentguard.guards.judge import JudgeGuard

    return JudgeGuard(arg)


def _classifier(arg: str | None) -> Guard:
    if not arg:
        raise ValueError("the classifier guard needs a model: 'classifier:MODEL' (a local folder or a hub id)")
    from latentguard.guards.classifier import ClassifierGuard

    return ClassifierGuard(arg)


def _published(name: str) -> Callable[[str | None], Guard]:
    def factory(arg: str | None) -> Guard:
        from latentguard.guards.safety_classifiers import classifier_guard

        return classifier_guard(name, arg)

    return factory


def _cascade(parts: list[str]) -> Guard:
    """``cascade(first, second, low=L, high=H)`` (:mod:`latentguard.guards.cascade`)."""
    from latentguard.guards.cascade import CascadeGuard

    members = [p for p in parts if not re.fullmatch(r"(low|high)=.*", p)]
    band = dict(p.split("=", 1) for p in parts if p not in members)
    if len(members) != 2 or set(band) != {"low", "high"}:
        raise ValueError(f"a cascade is 'cascade(FIRST, SECOND, low=L, high=H)', got cascade({', '.join(parts)}); "
                         "the band [L, H) of the first guard's risk goes to the second")
    try:
        low, high = float(band["low"]), float(band["high"])
    except ValueError as err:
        raise ValueError(f"cascade band values must be numbers, got low={band['low']!r}, high={band['high']!r}") from err
    return CascadeGuard(make_guard(members[0]), make_guard(members[1]), low, high)


def _model_probe(arg: str | None) -> Guard:
    if not arg:
        raise ValueError("the model probe needs its folder: 'model-probe:PATH' (tools/train_attention_probe.py --reader)")
    from latentguard.guards.probe import ModelProbe

    return ModelProbe.load(arg)


def _degenerate(arg: str | None) -> Guard:
    from latentguard.guards.degenerate import DegenerateGuard

    if arg:
        raise ValueError(f"the degenerate guard takes no argument, got {arg!r}; use 'degenerate'")
    return DegenerateGuard()


def _profanity(arg: str | None) -> Guard:
    from latentguard.guards.profanity import ProfanityGuard

    return ProfanityGuard()


def _trained(kind: str) -> Callable[[str | None], Guard]:
    def factory(arg: str | None) -> Guard:
        return load_trained_guard(kind, arg) if arg else DefaultGuard(kind)

    return factory


GUARDS: dict[str, Callable[[str | None], Guard]] = {
    "keyword": _keyword,
    "profanity": _profanity,
    "degenerate": _degenerate,
    "latent-probe": _trained("latent-probe"),
    "embedding": _trained("embedding"),
    "judge": _judge,
    "classifier": _classifier,
    "model-probe": _model_probe,
    **{name: _published(name) for name in ("llama-guard-3", "shieldgemma", "harmbench-cls")},
}
"""Registered guard names -> factory taking the text after ``name:`` (or ``None``)."""


def make_guard(spec: Any) -> Guard:
    """Build a guard from a spec (see the module docstring)."""
    if isinstance(spec, Guard):
        return spec
    if isinstance(spec, str):
        spec = spec.strip()
        composite = re.fullmatch(r"(any|max|mean|cascade)\((.*)\)", spec, flags=re.DOTALL)
        if composite and composite.group(1) == "cascade":
            return _cascade(split_top_level(composite.group(2)))
        if composite:
            members = [make_guard(s) for s in split_top_level(composite.group(2))]
            kinds: dict[str, type[AnyGuard | MaxGuard | MeanGuard]] = {"any": AnyGuard, "max": MaxGuard, "mean": MeanGuard}
            return kinds[composite.group(1)](members)
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


__all__ = ["DEFAULT_PATTERNS", "GUARDS", "AnyGuard", "CallableGuard", "DefaultGuard", "Guard", "KeywordGuard",
           "MaxGuard", "MeanGuard", "check_risk", "checked_risk", "make_guard", "violations"]
