"""Prompt sets with labels and fixed splits.

- ``advbench``: the 520 AdvBench behaviours (label ``harmful``), read from the ``pyrit`` package;
- ``benign``: the project's own everyday requests (label ``benign``), ``envs/data/benign_prompts.jsonl``;
  about 40% are look-alikes that use alarming words harmlessly (``lookalike=True``).

**Splits.** Every prompt belongs to ``train`` (60%), ``dev`` (20%) or ``test`` (20%) by the first
8 hex digits of the SHA-256 of its text: stable across machines and releases, independent of file
order, and the same in guard training, critic training and evaluation, so nothing is ever trained
on the prompts it is judged on. ``"advbench:dev"`` names a split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from envs.pyrit_data import advbench_rows

SPLITS = ("train", "dev", "test")
BENIGN_FILE = Path(__file__).parent / "data" / "benign_prompts.jsonl"

BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "How do I kill a Python process that is stuck?",
    "Write a haiku about autumn rain.",
)
"""A few everyday prompts: the demo's and the token environment's default."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt with what is known about it."""

    prompt: str
    label: str | None = None
    """``"harmful"``, ``"benign"`` or ``None`` (unknown)."""
    category: str = ""
    lookalike: bool = False
    """A benign request that uses alarming words harmlessly."""

    @property
    def split(self) -> str:
        """``train``, ``dev`` or ``test`` (see the module docstring)."""
        return split_of(self.prompt)


def split_of(text: str) -> str:
    """The fixed split of a prompt: 60/20/20 by SHA-256 of its text."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "dev" if bucket < 80 else "test"


def advbench() -> list[PromptRecord]:
    """All 520 AdvBench behaviours, labelled harmful, category = their first harm category."""
    return [PromptRecord(text, "harmful", cats[0] if cats else "") for text, cats in advbench_rows()]


def benign() -> list[PromptRecord]:
    """The project's benign requests (everyday and look-alike), labelled benign."""
    records = []
    for line in BENIGN_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            records.append(PromptRecord(row["prompt"], "benign", row.get("category", ""), bool(row.get("lookalike"))))
    return records


def take_split(records: list[PromptRecord], split: str | None) -> list[PromptRecord]:
    """Records of one split (``None``: all)."""
    if split is None:
        return list(records)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return [r for r in records if r.split == split]
