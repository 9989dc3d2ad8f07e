"""MkDocs hook: a fence opened with ```` ```python no-run ```` renders as a plain Python block.

``no-run`` marks an example that ``tests/test_docs_examples.py`` does not execute (it needs files
or machines the tests do not have); the reader sees ordinary Python.
"""

from __future__ import annotations

import re

NO_RUN = re.compile(r"^(\s*)```python\s+no-run\s*$", flags=re.MULTILINE)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return NO_RUN.sub(r"\1```python", markdown)
