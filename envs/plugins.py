"""Plug-in resolution shared by guards and rewards.

A plug-in is given as an object, a callable, a registered name, or a ``"package.module:attr"``
string; :func:`import_object` loads the last form with an error that names what failed.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_object(spec: str, kind: str) -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted); ``kind`` names it in errors."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{kind} {spec!r} is not a known name or a 'package.module:attr' string")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{kind} {spec!r}: cannot import module {module_name!r} ({err}); check the module path") from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ValueError(f"{kind} {spec!r}: module {module_name!r} has no attribute {attr!r}") from err
    return obj
