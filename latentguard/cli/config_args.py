"""Command lines generated from dataclass configs (one source of truth for defaults and help).

Each field becomes ``--field-name``; its help is the docstring written under the field (read from
the source with :mod:`ast`), its type and default come from the dataclass.

>>> from dataclasses import dataclass
>>> @dataclass
... class Config:
...     steps: int = 10
...     '''How many steps.'''
>>> parse_config(Config, ["--steps", "3"])
Config(steps=3)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (``x: int = 1`` then ``'''doc'''``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        klass_def = tree.body[0]
        if not isinstance(klass_def, ast.ClassDef):
            continue
        body = klass_def.body
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _bool(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError(f"expected true/false, got {text!r}")
    return value


_bool.__name__ = "bool"


def _parser_for(tp: Any):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return _parser_for(args[0])
    if tp is bool:
        return _bool
    if tp in (int, float, str):
        return tp
    return str


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--option`` per field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{field.name} has no default, so it cannot be an option")
        optional = {"nargs": "?", "const": field.metadata["const"]} if "const" in field.metadata else {}
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_parser_for(hints[field.name]),
            default=default,
            help=f"{docs.get(field.name, '')} (default: {default!r})".strip().replace("%", "%%"),  # argparse formats help with %
            **optional,  # a field with metadata {"const": v}: the option alone means v (``--ray`` = a local cluster)
        )


def config_from_args(cls: type[T], namespace: argparse.Namespace) -> T:
    """Build ``cls`` from the parsed options (the dataclass validates itself)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})


class OneLineParser(argparse.ArgumentParser):
    """An argument parser that reports a bad option or value as one line, ``error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


USER_ERRORS = (ValueError, FileNotFoundError, TypeError, ConnectionError, PermissionError, NotADirectoryError,
               IsADirectoryError, FileExistsError)
"""What a bad option, value or file raises; the CLIs print these as one line (set LATENTGUARD_DEBUG=1 for the traceback)."""

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as shells report it)."""


def run_cli(main_body: Callable[[], int], interrupted: Callable[[], str] | None = None) -> int:
    """Run ``main_body()``: a user error (:data:`USER_ERRORS`) becomes one line ``error: ...`` and exit
    status 2; Ctrl-C becomes one line ``interrupted: ...`` saying what was saved and how to resume
    (``interrupted()``), exit status 130."""
    try:
        return main_body()
    except KeyboardInterrupt:
        if os.environ.get("LATENTGUARD_DEBUG"):
            raise
        note = interrupted() if interrupted is not None else "nothing was saved"
        sys.stderr.write(f"\ninterrupted: {note}\n")
        return INTERRUPTED
    except USER_ERRORS as err:
        if os.environ.get("LATENTGUARD_DEBUG"):
            raise
        lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
        message = "; ".join(lines) or type(err).__name__  # every line of the message, on one line
        sys.stderr.write(f"error: {message}\n")
        return 2


def parse_config(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse ``argv`` into a ``cls`` config."""
    parser = OneLineParser(description=description or (cls.__doc__ or "").strip())
    add_config_args(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))
