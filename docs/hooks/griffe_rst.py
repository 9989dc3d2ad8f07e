"""A Griffe extension that lets mkdocstrings render the package's reST-flavoured docstrings.

The package writes Sphinx-style docstrings (``:param x:``, which mkdocstrings' ``sphinx`` parser
reads) with reST roles and doctests in them, which Markdown does not know. Before rendering:

- a role such as ``:class:`~latentguard.lm.DecodeState``` becomes an optional cross-reference
  (a link where the target is documented, plain code where it is not; never a warning);
- a doctest (``>>>`` lines and their output) becomes a fenced ``pycon`` block;
- a literal block introduced by ``::`` keeps its indented text as code and loses one colon;
- ``:param a, b: doc`` becomes one ``:param`` line per name (the ``sphinx`` parser reads one name);
- ``<name>`` placeholders outside code (``<cache>/critics/<model>``) are escaped, not read as HTML.

Registered in ``mkdocs.yml`` under the python handler's ``extensions``; :func:`rst_to_markdown` is
also used by the CLI reference hook for the config fields' docs.
"""

from __future__ import annotations

import html
import re
import textwrap

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<>]+?)`")
PLACEHOLDER = re.compile(r"<([A-Za-z_][\w.-]*)>")
MULTI_PARAM = re.compile(r"^(\s*):param ([\w]+(?:,\s*\w+)+):(.*)$")
CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")


def _role(match: re.Match, resolve) -> str:
    short, target = match.group(1) == "~", match.group(2).strip()
    title = target.rsplit(".", 1)[-1] if short else target
    target = resolve(target) if resolve else target
    return f'<autoref optional identifier="{html.escape(target)}"><code>{html.escape(title)}</code></autoref>'


def _escape_placeholders(line: str) -> str:
    parts = CODE_SPAN.split(line)
    return "".join(p if i % 2 else PLACEHOLDER.sub(r"&lt;\1&gt;", p) for i, p in enumerate(parts))


def rst_to_markdown(text: str, resolve=None) -> str:
    """Markdown for a reST-flavoured docstring (see the module docstring); ``resolve(name)`` turns a
    role's target into the identifier it links to (default: the name as written)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):  # a doctest: the prompts and their output, to the next blank line
            indent = line[: len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```", ""]
            continue
        if line.rstrip().endswith("::") and not stripped.startswith(".."):  # a literal block follows
            out.append(line.rstrip()[:-1])
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            body = textwrap.dedent("\n".join(block)).strip("\n")
            out += ["", "```text", *body.splitlines(), "```", ""]
            continue
        params = MULTI_PARAM.match(line)
        if params:  # ":param a, b: doc" -> one ":param x: doc" per name (the sphinx parser reads one)
            indent, names, doc = params.group(1), [n.strip() for n in params.group(2).split(",")], params.group(3)
            while i + 1 < len(lines) and lines[i + 1].strip() \
                    and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > len(indent):
                i += 1
                doc += " " + lines[i].strip()
            line = "\n".join(f"{indent}:param {n}: {doc.strip()}" for n in names)
        out.append(ROLE.sub(lambda m: _role(m, resolve), _escape_placeholders(line)))
        i += 1
    return "\n".join(out)


def resolver(obj: griffe.Object):
    """Where a name written in ``obj``'s docstring points: a dotted ``latentguard...`` path as is; a
    short name through ``obj``'s class, then its module (an imported name to the object it imports)."""

    def resolve(target: str) -> str:
        if target.startswith("latentguard"):
            return target
        head, _, rest = target.partition(".")
        scopes = [o for o in (obj if obj.is_class else obj.parent, obj.module) if o is not None]
        for scope in scopes:
            member = scope.members.get(head)
            if member is not None:
                path = member.target_path if member.is_alias else member.path
                return f"{path}.{rest}" if rest else path
        return f"{obj.module.path}.{target}"

    return resolve


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring of the package with :func:`rst_to_markdown` once it is loaded (so
    that short names resolve through the modules' imports)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        todo = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, resolver(obj))
            todo += [m for m in obj.members.values() if not m.is_alias]
