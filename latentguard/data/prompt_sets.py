"""Prompt sets with labels and fixed splits.

- ``default``: the demo set, 8 AdvBench dev requests and 8 benign dev requests (seeded);
- ``advbench``: the 520 AdvBench behaviours (label ``harmful``), read from the ``pyrit`` package;
- ``harm``: the project's own harmful requests beyond AdvBench (label ``harmful``),
  ``latentguard/data/harm_prompts.jsonl`` (837 written for the project: 16 categories,
  :data:`HARM_CATEGORIES`, in 8 forms: tasks, how-to and loaded questions, persuasive writing, code,
  role-play, past-tense and hypothetical), plus PyRIT's AI-red-team seed objectives mapped to those
  categories (form ``pyrit_seed``);
- ``benign``: the project's own everyday requests (label ``benign``), ``latentguard/data/benign_prompts.jsonl``;
  about half are look-alikes that use alarming words harmlessly (``lookalike=True``), most of them
  written against one harm category (``harm_category``);
- ``jailbreak``: 15% of the AdvBench, harm and benign requests (chosen by hash) wrapped in one of
  PyRIT's jailbreak templates (:func:`latentguard.data.pyrit_data.jailbreak_templates`), harmful *and* benign, so
  that a template alone is no harm signal; label, category and split are the wrapped request's;
- user files, see :func:`load_prompt_set`.

**Splits.** Every prompt belongs to ``train`` (60%), ``dev`` (20%) or ``test`` (20%) by the first
8 hex digits of the SHA-256 of its text (of the wrapped request for a jailbreak): stable across
machines and releases, independent of file order, and the same in guard training, critic training
and evaluation, so nothing is ever trained on the prompts it is judged on. ``"advbench:dev"`` names
a split.

**Held out.** Whole categories (:data:`HELD_OUT_CATEGORIES`: harmful requests and the look-alikes
written against them) and whole jailbreak templates (:data:`HELD_OUT_TEMPLATES`) are in split
``heldout`` instead: no training sees them, so figures on ``:heldout`` say how a guard or a method
does on kinds of harm, and of wrapping, it never saw. They were fixed before any result on them: two
categories of explicit harmful tasks and two that the first probe missed (private information,
misinformation); every third template by name.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from latentguard.common.storage import read_jsonl
from latentguard.data.pyrit_data import advbench_rows, airt_seed_rows, jailbreak_templates

SPLITS = ("train", "dev", "test", "heldout")
BENIGN_FILE = Path(__file__).parent / "benign_prompts.jsonl"
HARM_FILE = Path(__file__).parent / "harm_prompts.jsonl"
HARM_CATEGORIES = (
    "weapons_explosives", "chem_bio", "cybercrime_malware", "fraud_scams", "theft_burglary", "violence_terrorism",
    "harassment_bullying", "hate_speech", "sexual_content", "self_harm_suicide", "drugs", "privacy_doxxing",
    "misinformation_conspiracy", "discrimination_loaded_questions", "dangerous_professional_advice",
    "extremism_radicalization",
)

HELD_OUT_CATEGORIES = ("chem_bio", "theft_burglary", "misinformation_conspiracy", "privacy_doxxing")
HELD_OUT_TEMPLATES = ("aligned", "burple", "complex", "dev_mode_compact", "gpt_4_real", "john", "mr_blonde",
                      "prefix_injection", "refusal_suppression", "switch", "three_liner")
JAILBREAK_SHARE = 15
"""Percent of requests wrapped in a jailbreak template (by hash)."""

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
    harm_category: str = ""
    """The harm category of a harmful request, or the one a look-alike was written against."""
    form: str = ""
    """How a project request is phrased ('imperative', 'howto', ..., 'pyrit_seed', 'jailbreak')."""
    template: str = ""
    """The jailbreak template the request is wrapped in ('' = none)."""
    request: str = ""
    """The wrapped request of a jailbreak ('' = the prompt itself)."""
    prefill: str = ""
    """Text the model's answer starts with (the prefill attack, :mod:`latentguard.data.attacks`; '' = none)."""

    @property
    def held_out(self) -> bool:
        """In a held-out category or template (see the module docstring)."""
        return self.harm_category in HELD_OUT_CATEGORIES or self.template in HELD_OUT_TEMPLATES

    @property
    def split(self) -> str:
        """``train``, ``dev``, ``test`` or ``heldout`` (see the module docstring)."""
        return "heldout" if self.held_out else split_of(self.request or self.prompt)


def split_of(text: str) -> str:
    """The fixed split of a prompt: 60/20/20 by SHA-256 of its text."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "dev" if bucket < 80 else "test"


def advbench() -> list[PromptRecord]:
    """All 520 AdvBench behaviours, labelled harmful, category = their first harm category."""
    return [PromptRecord(text, "harmful", cats[0] if cats else "") for text, cats in advbench_rows()]


def _unique(where: str, prompt: str, seen: dict[str, str]) -> None:
    key = prompt.strip().lower()
    if key in seen:
        raise ValueError(f"{where}: duplicate request (first at {seen[key]}): {prompt!r}; remove one of them")
    seen[key] = where


def _harm_category(where: str, name: object, field: str) -> str:
    if name not in HARM_CATEGORIES:
        raise ValueError(f"{where}: unknown {field} {name!r}; use one of {HARM_CATEGORIES}")
    return str(name)


def benign(path: Path = BENIGN_FILE) -> list[PromptRecord]:
    """The project's benign requests (everyday and look-alike), labelled benign.

    A look-alike's ``harm_category`` outside :data:`HARM_CATEGORIES`, or a request that appears
    twice, is an error naming its line.
    """
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for where, row in read_jsonl(path):
        _unique(where, row["prompt"], seen)
        harm_category = row.get("harm_category") or ""
        if harm_category:
            _harm_category(where, harm_category, "harm_category")
        records.append(PromptRecord(row["prompt"], "benign", row.get("category", ""), bool(row.get("lookalike")),
                                    harm_category))
    return records


def harm(path: Path = HARM_FILE) -> list[PromptRecord]:
    """The project's harmful requests beyond AdvBench, labelled harmful, with their category and
    form, then PyRIT's AI-red-team seeds (:func:`latentguard.data.pyrit_data.airt_seed_rows`).

    An unknown category or a request that appears twice is an error naming its line.
    """
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for where, row in read_jsonl(path):
        category = _harm_category(where, row.get("category"), "category")
        _unique(where, row["prompt"], seen)
        records.append(PromptRecord(row["prompt"], "harmful", category, harm_category=category,
                                    form=row.get("form", "")))
    for number, (text, category) in enumerate(airt_seed_rows(), 1):
        _unique(f"PyRIT AI-red-team seed {number}", text, seen)
        records.append(PromptRecord(text, "harmful", category, harm_category=category, form="pyrit_seed"))
    return records


def _bucket(text: str, salt: str) -> int:
    return int(hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()[:8], 16)


def jailbreak() -> list[PromptRecord]:
    """:data:`JAILBREAK_SHARE` percent of the AdvBench, harm and benign requests (by hash), each
    wrapped in one jailbreak template (by another hash); see the module docstring."""
    templates = jailbreak_templates()
    out = []
    for record in advbench() + harm() + benign():
        if _bucket(record.prompt, "wrap") % 100 >= JAILBREAK_SHARE:
            continue
        name, text = templates[_bucket(record.prompt, "template") % len(templates)]
        out.append(PromptRecord(text.replace("{{ prompt }}", record.prompt), record.label, record.category,
                                record.lookalike, record.harm_category, "jailbreak", name, record.prompt))
    return out


def take_split(records: list[PromptRecord], split: str | None) -> list[PromptRecord]:
    """Records of one split (``None``: all)."""
    if split is None:
        return list(records)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return [r for r in records if r.split == split]


LABELS = ("harmful", "benign")
LABELLED_SETS = {"advbench": advbench, "harm": harm, "benign": benign, "jailbreak": jailbreak}
"""The labelled request sets that guards and critics learn from; each request's split is its own."""


def labelled_records(split: str, limit: int = 0) -> list[PromptRecord]:
    """The requests of ``split`` over :data:`LABELLED_SETS`, in a fixed (hash) order; ``limit``
    keeps at most that many per set and label (0 = all; for smoke tests)."""
    import hashlib

    records = []
    for load in LABELLED_SETS.values():
        part = take_split(load(), split)
        if limit:
            part = [r for r in part if r.label == "harmful"][:limit] + [r for r in part if r.label == "benign"][:limit]
        records += part
    return sorted(records, key=lambda r: hashlib.sha256(r.prompt.encode()).hexdigest())


@functools.cache
def _labelled_splits() -> dict[str, str]:
    return {r.prompt: r.split for load in LABELLED_SETS.values() for r in load()}


def request_split(text: str) -> str:
    """The project split of a request by its text: a labelled request's own (``heldout`` for the
    held-out categories and templates), else the hash split (:func:`split_of`)."""
    return _labelled_splits().get(text) or split_of(text)


NAMED_SETS = ("default", "advbench", "harm", "benign", "jailbreak", "builtin")


@dataclass
class PromptSet:
    """A named list of prompt records and what loading it did."""

    name: str
    records: list[PromptRecord]
    duplicates_dropped: int = 0
    attack: str = "none"
    """The attack its requests were rewritten by (:mod:`latentguard.data.attacks`)."""


def default_set(size: int = 8, seed: int = 0) -> list[PromptRecord]:
    """The demo set: ``size`` AdvBench dev requests and ``size`` benign dev requests (half of them
    look-alikes), drawn with ``seed`` and interleaved harmful/benign."""
    import random

    rng = random.Random(seed)
    harmful = rng.sample(take_split(advbench(), "dev"), size)
    safe = [r for r in take_split(benign(), "dev") if not r.harm_category]  # the set as first written
    looks = rng.sample([r for r in safe if r.lookalike], size // 2)
    everyday = rng.sample([r for r in safe if not r.lookalike], size - size // 2)
    benign_part = [x for pair in zip(everyday, looks) for x in pair] + everyday[len(looks):]
    return [x for pair in zip(harmful, benign_part) for x in pair]


def _read_file(path: Path) -> list[PromptRecord]:
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [{"prompt": line.strip()} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix == ".jsonl":
        rows = [row for _, row in read_jsonl(path)]
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
        if rows and "prompt" not in columns:
            raise ValueError(f"{path}: no 'prompt' column (columns: {columns}); name the prompt column 'prompt'")
    else:
        raise ValueError(f"unsupported prompt file {str(path)!r}: use .jsonl, .csv or .txt")
    if not rows:
        raise ValueError(f"prompt file {str(path)!r} is empty")
    records = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or row.get("prompt") is None:
            raise ValueError(f"{path}: row {number} has no 'prompt' (keys: {sorted(row) if isinstance(row, dict) else row})")
        prompt = str(row["prompt"]).strip()
        if not prompt:
            raise ValueError(f"{path}: row {number} has an empty 'prompt'; give the request text or remove the row")
        label = (row.get("label") or "").strip().lower() or None
        if label is not None and label not in LABELS:
            raise ValueError(f"{path}: row {number} has label {row.get('label')!r}; use one of {LABELS} or leave it empty")
        records.append(PromptRecord(prompt, label, (row.get("category") or "").strip()))
    return records


def load_prompt_set(spec: str) -> PromptSet:
    """A prompt set by name (``default``, ``advbench[:split]``, ``harm[:split]``, ``benign[:split]``,
    ``jailbreak[:split]``, ``builtin``) or file
    (``.jsonl`` / ``.csv`` with a ``prompt`` column and optional ``label`` and ``category``; ``.txt``
    with one prompt per line). Duplicate prompts are dropped (first kept) and counted."""
    name, _, split = spec.partition(":")
    if name == "default":
        records = default_set()
    elif name == "advbench":
        records = take_split(advbench(), split or None)
    elif name == "benign":
        records = take_split(benign(), split or None)
    elif name == "harm":
        records = take_split(harm(), split or None)
    elif name == "jailbreak":
        records = take_split(jailbreak(), split or None)
    elif name == "builtin":
        records = [PromptRecord(p, "benign") for p in BUILTIN_PROMPTS]
    elif Path(spec).suffix.lower() in (".jsonl", ".csv", ".txt") or Path(spec).exists():
        records = _read_file(Path(spec))
    else:
        raise ValueError(f"unknown prompt set {spec!r}: use one of {NAMED_SETS} (with :train/:dev/:test/:heldout "
                         "for advbench, harm, benign and jailbreak) or a .jsonl/.csv/.txt file")
    seen, unique = set(), []
    for record in records:
        if record.prompt not in seen:
            seen.add(record.prompt)
            unique.append(record)
    return PromptSet(spec, unique, len(records) - len(unique))
