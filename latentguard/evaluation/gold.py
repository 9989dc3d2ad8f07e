"""The gold set: (request, answer) pairs of the default model labelled by reading, and how well a
judge agrees with it.

``latentguard/evaluation/data/gold/gold.jsonl`` holds one labelled pair per line (rubric: ``RUBRIC.md`` beside it)::

    {"id": "d0001", "prompt": ..., "text": ..., "label": "harmful"|"benign", "category": ...,
     "lookalike": bool, "method": ..., "split": "train"|"dev",
     "refused": bool, "harmful": bool, "coherent": bool, "helpful": bool|null, "reason": ...,
     "attack": "none"|"template"|"past-tense"|"prefill", "shown_prompt": ...}

``attack`` and ``shown_prompt`` (optional) say how an attacked request reached the model; ``prompt`` is
then the original request and a prefilled answer starts with its prefill.

The split follows the request: answers to requests of the project's ``train`` split are gold
``train`` (judges are fitted on them), all others gold ``dev`` (judges are measured on them), so a
judge never meets at evaluation time a request whose answers it was fitted on.
``second_pass.jsonl`` relabels 100 rows blind (same fields, ``id`` and labels only).

Agreement is measured where a label means something: ``harmful`` on answers to harmful requests,
``helpful`` on answers to benign requests, ``refused`` and ``coherent`` on all answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentguard.common.storage import read_jsonl

GOLD_DIR = Path(__file__).parent / "data" / "gold"
GOLD_FILE = GOLD_DIR / "gold.jsonl"
SECOND_PASS_FILE = GOLD_DIR / "second_pass.jsonl"
LABELS = ("harmful", "benign")
GOLD_SPLITS = ("train", "dev")
TARGETS = ("harmful", "refused", "coherent", "helpful")
"""The judged properties, in report order."""


@dataclass(frozen=True)
class GoldRow:
    """One labelled (request, answer) pair (fields as in the module docstring)."""

    id: str
    prompt: str
    text: str
    label: str
    split: str
    refused: bool
    harmful: bool
    coherent: bool
    helpful: bool | None
    reason: str = ""
    category: str = ""
    lookalike: bool = False
    method: str = ""
    attack: str = "none"
    """How the request was put to the model (:mod:`latentguard.data.attacks`); ``prompt`` is always the
    original request, which the readers judged the answer against."""
    shown_prompt: str = ""
    """The prompt as the model saw it, where an attack rewrote it ('' = ``prompt``)."""

    def target(self, name: str) -> bool | None:
        """The gold value of ``name`` where it is defined for this row, else None."""
        if name == "harmful":
            return self.harmful if self.label == "harmful" else None
        if name == "helpful":
            return self.helpful if self.label == "benign" else None
        return getattr(self, name)


_REQUIRED = ("id", "prompt", "text", "label", "split", "refused", "harmful", "coherent", "helpful")


def parse_gold_line(row: dict, where: str) -> GoldRow:
    """Check one JSON object against the schema; errors name ``where`` (``file:line``)."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; every row needs {list(_REQUIRED)}")
    if row["label"] not in LABELS:
        raise ValueError(f"{where}: unknown label {row['label']!r}; use one of {LABELS}")
    if row["split"] not in GOLD_SPLITS:
        raise ValueError(f"{where}: unknown split {row['split']!r}; use one of {GOLD_SPLITS}")
    for key in ("refused", "harmful", "coherent"):
        if not isinstance(row[key], bool):
            raise ValueError(f"{where}: {key} must be true or false, got {row[key]!r}")
    if row["label"] == "benign" and row["harmful"]:
        raise ValueError(f"{where}: an answer to a benign request cannot be harmful (rubric); set harmful to false")
    helpful = row["helpful"]
    if row["label"] == "benign" and not isinstance(helpful, bool):
        raise ValueError(f"{where}: helpful must be true or false for a benign request, got {helpful!r}")
    if row["label"] == "harmful" and helpful is not None:
        raise ValueError(f"{where}: helpful must be null for a harmful request, got {helpful!r}")
    return GoldRow(id=str(row["id"]), prompt=str(row["prompt"]), text=str(row["text"]), label=row["label"],
                   split=row["split"], refused=row["refused"], harmful=row["harmful"], coherent=row["coherent"],
                   helpful=helpful, reason=str(row.get("reason", "")), category=str(row.get("category", "")),
                   lookalike=bool(row.get("lookalike", False)), method=str(row.get("method", "")),
                   attack=str(row.get("attack", "none")), shown_prompt=str(row.get("shown_prompt", "")))


def load_gold(path: str | Path | None = None, split: str | None = None) -> list[GoldRow]:
    """Rows of a gold file (default: the shipped one), optionally one split; bad rows are named by line."""
    path = Path(path) if path is not None else GOLD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"gold file not found: {str(path)!r}")
    if split is not None and split not in GOLD_SPLITS:
        raise ValueError(f"unknown gold split {split!r}; use one of {GOLD_SPLITS}")
    rows, ids = [], set()
    for where, data in read_jsonl(path):
        row = parse_gold_line(data, where)
        if row.id in ids:
            raise ValueError(f"{where}: duplicate id {row.id!r}")
        ids.add(row.id)
        rows.append(row)
    if not rows:
        raise ValueError(f"gold file {str(path)!r} is empty")
    return [r for r in rows if split is None or r.split == split]


def agreement(predicted: Sequence[bool] | np.ndarray, gold: Sequence[bool] | np.ndarray) -> dict:
    """Accuracy, Cohen's kappa, precision and recall of ``predicted`` against ``gold`` (positive = True).

    >>> a = agreement([True, True, False, False], [True, False, False, False])
    >>> a["accuracy"], a["precision"], a["recall"], round(a["kappa"], 3)
    (0.75, 0.5, 1.0, 0.5)
    """
    p, g = np.asarray(predicted, dtype=bool), np.asarray(gold, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"got {p.shape[0]} predictions for {g.shape[0]} gold labels")
    n = len(g)
    if n == 0:
        return {"n": 0, "accuracy": None, "kappa": None, "precision": None, "recall": None, "positives": 0}
    tp, fp = int((p & g).sum()), int((p & ~g).sum())
    fn, tn = int((~p & g).sum()), int((~p & ~g).sum())
    accuracy = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = 1.0 if expected == 1 else (accuracy - expected) / (1 - expected)
    return {"n": n, "accuracy": accuracy, "kappa": kappa,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "positives": int(g.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def judge_agreement(verdicts: dict[str, np.ndarray | None], rows: Sequence[GoldRow]) -> dict:
    """Agreement per target the judge gives, on the rows where the target is defined, with the
    errors per category (request category) and the ids of the rows it gets wrong."""
    out = {}
    for target in TARGETS:
        predicted = verdicts.get(target)
        if predicted is None:
            continue
        keep = [i for i, r in enumerate(rows) if r.target(target) is not None]
        gold = [bool(rows[i].target(target)) for i in keep]
        pred = [bool(predicted[i]) for i in keep]
        stats = agreement(pred, gold)
        errors: dict[str, int] = {}
        wrong = []
        for i, p, g in zip(keep, pred, gold):
            if p != g:
                errors[rows[i].category or "-"] = errors.get(rows[i].category or "-", 0) + 1
                wrong.append(rows[i].id)
        stats["errors_by_category"] = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
        stats["wrong_ids"] = wrong
        out[target] = stats
    return out


def second_pass_agreement(first: Sequence[GoldRow] | None = None, path: str | Path | None = None) -> dict:
    """Agreement of the blind second pass with the first labels, per target."""
    by_id = {r.id: r for r in (first if first is not None else load_gold())}
    path = Path(path) if path is not None else SECOND_PASS_FILE
    second = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = [s["id"] for s in second if s["id"] not in by_id]
    if unknown:
        raise ValueError(f"{path}: ids not in the gold set: {unknown[:5]}")
    out = {}
    for target in TARGETS:
        pairs = [(s[target], by_id[s["id"]].target(target)) for s in second
                 if by_id[s["id"]].target(target) is not None and s.get(target) is not None]
        out[target] = agreement([bool(a) for a, _ in pairs], [bool(b) for _, b in pairs])
    return out
