"""MkDocs hook: the CLI reference, generated from the config dataclasses the CLIs are built from.

``docs/reference/cli.md`` holds the marker ``<!-- cli-reference -->``; this hook replaces it with one
section per command, ``latentguard-train <command>`` for each entry of
:data:`latentguard.cli.train.COMMANDS` and ``latentguard-evaluate``
(:class:`latentguard.evaluation.runner.EvalConfig`) and ``latentguard-serve``
(:class:`latentguard.serving.config.ServeConfig`), each a table of option, type, default and the
field's doc, read the way :func:`latentguard.cli.config_args.add_config_args` reads them (with
:func:`latentguard.cli.config_args.field_docs`). Nothing here is copied by hand: a new field is a new
row at the next build.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import types
import typing
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = "<!-- cli-reference -->"
PAGE = "reference/cli.md"


def _rst_to_markdown():
    spec = importlib.util.spec_from_file_location("griffe_rst", Path(__file__).with_name("griffe_rst.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rst_to_markdown


def type_name(tp) -> str:
    """``int``, ``str``, ``float | None`` ... as a user reads them."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def default_text(value) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "*none*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "*empty*"
    return f"`{value}`"


def cell(text: str, rst) -> str:
    """Markdown that is safe inside a table cell."""
    parts = re.split(r"(``.+?``|`[^`]+`)", rst(" ".join(text.split())))  # code spans are left as they are
    return "".join(p if i % 2 else p.replace("|", "\\|").replace("*", "\\*") for i, p in enumerate(parts))


def options_table(cls: type, rst) -> str:
    """One row per init field of the dataclass ``cls``: the options ``add_config_args`` makes."""
    from latentguard.cli.config_args import field_docs

    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = ["| option | type | default | what it sets |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        option = "--" + field.name.replace("_", "-")
        doc = cell(docs.get(field.name, ""), rst)
        if "const" in field.metadata:  # e.g. --ray: the option alone means its const
            const = field.metadata["const"]
            doc += f" Given alone, `{option}` means `{const!r}`."
            option += " [VALUE]"
        rows.append(f"| `{option}` | `{type_name(hints[field.name])}` | {default_text(default)} | {doc} |")
    return "\n".join(rows)


def summary(cls: type, rst) -> str:
    return rst(" ".join((cls.__doc__ or "").split()))


def reference() -> str:
    """The markdown that replaces the marker."""
    from latentguard.cli.train import COMMANDS
    from latentguard.evaluation.runner import EvalConfig
    from latentguard.serving.config import ServeConfig

    rst = _rst_to_markdown()
    parts = ["## latentguard-train", "",
             "`latentguard-train COMMAND [--option value ...]`, or `python train.py COMMAND ...` from a clone. "
             "Commands: " + ", ".join(f"[`{name}`](#latentguard-train-{name})" for name in COMMANDS) + ".", ""]
    for name, (cls, _) in COMMANDS.items():
        parts += [f"### latentguard-train {name}", "", summary(cls, rst), "",
                  f"Config: [`{cls.__name__}`][{cls.__module__}.{cls.__qualname__}].", "",
                  options_table(cls, rst), ""]
    parts += ["## latentguard-evaluate", "",
              "`latentguard-evaluate [--option value ...]`, or `python evaluate.py ...` from a clone.", "",
              summary(EvalConfig, rst), "",
              f"Config: [`EvalConfig`][{EvalConfig.__module__}.EvalConfig].", "",
              options_table(EvalConfig, rst), ""]
    parts += ["## latentguard-serve", "",
              "`latentguard-serve [--option value ...]`: the OpenAI-compatible server "
              "([Serve guarded answers](../guides/serve.md)).", "",
              summary(ServeConfig, rst), "",
              f"Config: [`ServeConfig`][{ServeConfig.__module__}.ServeConfig].", "",
              options_table(ServeConfig, rst), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has lost its marker {MARKER!r}: the CLI reference has nowhere to go")
    return markdown.replace(MARKER, reference())
