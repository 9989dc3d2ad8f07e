"""Every Python example in README.md and docs/ runs.

Each ```python block of a page runs in order in one namespace per page (like a notebook), in a
temporary folder with its own user cache. Examples name their model in one line,
``MODEL = "smollm2-135m-instruct"`` (the embedded default); here that value becomes ``"tiny"``, a
tiny random model, so the examples run in seconds. Blocks marked ```python no-run, and shell
blocks, are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`\n]*)$")
MODEL_LINE = re.compile(r"""^(?P<head>\s*MODEL\s*=\s*)["']smollm2-135m-instruct["']""", flags=re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block that is not marked no-run."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks, info = opening["indent"], opening["ticks"], opening["info"].split()
        body, start = [], i + 2
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(ticks) and not lines[i].strip().strip("`")):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if info[:1] == ["python"] and "no-run" not in info[1:]:
            blocks.append((start, "\n".join(body)))
    return blocks


def on_tiny_model(code: str) -> str:
    """The example with its model line pointed at the tiny model."""
    return MODEL_LINE.sub(r'\g<head>"tiny"', code)


def test_the_extractor_reads_fences_in_order_and_skips_no_run():
    page = "\n".join(["```python", "a = 1", "```", "```python no-run", "b = 2", "```", "- item", "  ```python",
                      "  c = a", "  ```", "```bash", "d", "```"])
    assert python_blocks(page) == [(2, "a = 1"), (9, "c = a")]
    assert on_tiny_model('MODEL = "smollm2-135m-instruct"\n') == 'MODEL = "tiny"\n'


EXAMPLES = [p for p in PAGES if python_blocks(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path / "cache"))  # and not in the user's cache
    namespace: dict = {"__name__": "__docs__"}
    for line, code in blocks:
        source = "\n" * (line - 1) + on_tiny_model(code)  # tracebacks name the page's own line numbers
        exec(compile(source, str(page), "exec"), namespace)
