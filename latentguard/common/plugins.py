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
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.split(".")[0] != err.name.split(".")[0]:  # the module's own import failed
            raise ValueError(f"{kind} {spec!r}: importing module {module_name!r} failed: {err}") from err
        raise ValueError(
            f"{kind} {spec!r}: cannot import module {module_name!r}: Python looks for it on sys.path (the installed "
            f"packages and the folder of the script), not in the current folder; make it importable, e.g. run with "
            f"PYTHONPATH=. from the folder that holds {module_name.replace('.', '/')}.py, or pip install its package"
        ) from err
    except ImportError as err:
        raise ValueError(f"{kind} {spec!r}: importing module {module_name!r} failed: {err}") from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ValueError(f"{kind} {spec!r}: module {module_name!r} has no attribute {attr!r}") from err
    return obj
