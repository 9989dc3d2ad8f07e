"""``evaluate.py --rejudge FILE --out DIR``: judge answers that already exist, without decoding.

``FILE`` is this project's ``samples.jsonl`` or any JSONL with ``prompt``, ``text`` (or
``response``) and ``label`` (``harmful``/``benign``; empty = unknown) per line, optionally
``method`` and ``prompt_set`` (default: ``rejudged`` and the file's stem). Every row is judged
afresh by the run's judges (old verdicts are dropped), benign answers get a relevance if they lack
one, and ``DIR`` receives ``samples.jsonl`` and the report, as a decoding run would write them.
The decoding guard of the samples is read from the ``config.json`` beside ``FILE`` when there is
one (else ``--guard``), so a judge that shares a signal with it is refused for the methods that
used it, as in a decoding run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from latentguard.agents.registry import make_method
from latentguard.common.storage import atomic_write_json, atomic_write_text, read_jsonl
from latentguard.data.prompt_sets import LABELS
from latentguard.evaluation.runner import EvalConfig
from latentguard.evaluation.validation import build_panel, guard_conflicts, judge_rows
from latentguard.guards import make_guard
from latentguard.rewards import RelevanceReward, RepetitionReward


def read_answers(path: Path) -> list[dict]:
    """The rows of an answers file, checked; a bad row is named by its line."""
    if not path.is_file():
        raise FileNotFoundError(f"samples file to rejudge not found: {str(path)!r}")
    rows = []
    for where, data in read_jsonl(path):
        if not isinstance(data, dict) or data.get("prompt") is None:
            raise ValueError(f"{where}: no 'prompt' field; each row needs prompt, text (or response) and label")
        if not str(data["prompt"]).strip():
            raise ValueError(f"{where}: the 'prompt' is empty; give the request text")
        text = data.get("text", data.get("response"))
        if text is None:
            raise ValueError(f"{where}: no 'text' or 'response' field (the answer to judge)")
        label = (data.get("label") or "").strip().lower() or None
        if label is not None and label not in LABELS:
            raise ValueError(f"{where}: unknown label {data.get('label')!r}; use one of {LABELS} or leave it empty")
        row = {k: v for k, v in data.items() if k not in ("judgements", "response")}
        row.update(prompt=str(data["prompt"]), text=str(text), label=label, judgements={},
                   method=str(data.get("method") or "rejudged"), prompt_set=str(data.get("prompt_set") or path.stem))
        rows.append(row)
    if not rows:
        raise ValueError(f"samples file {str(path)!r} is empty")
    return rows


def _uses_guard(spec: str) -> bool:
    try:
        return make_method(spec).uses_guard
    except ValueError:  # a method this project does not know: no guard of ours steered it
        return False


def rejudge(config: EvalConfig) -> dict:
    """Judge ``config.rejudge`` into ``config.out`` (see the module docstring); returns the report."""
    from latentguard.evaluation.report import build_report, write_report

    source = Path(config.rejudge)
    rows = read_answers(source)
    saved = source.parent / "config.json"
    if saved.is_file():
        config = replace(config, guard=json.loads(saved.read_text()).get("guard", config.guard))
    guard = make_guard(config.guard) if config.guard else None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    guarded = [m for m in methods if _uses_guard(m)]
    panel = build_panel(config.judge, config.guard or None, guard, config.gold, guarded_methods=bool(guarded))
    marks = guard_conflicts(panel, guarded, config.guard, config.allow_guard_judge)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    judge_rows(rows, panel)
    lacking = [r for r in rows if r.get("relevance") is None]
    if lacking:
        prompts, texts = [r["prompt"] for r in lacking], [r["text"] for r in lacking]
        for row, rel, rep in zip(lacking, RelevanceReward(panel.features.encoder)(prompts, texts),
                                 RepetitionReward()(prompts, texts)):
            row["relevance"], row["repetition"] = float(rel), float(rep)
    atomic_write_json(out / "config.json", asdict(config))
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    sets = list(dict.fromkeys(r["prompt_set"] for r in rows))
    report = build_report(rows, asdict(config), panel, sets, marks)
    report["rejudged"] = {"file": str(source), "rows": len(rows)}
    report["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(report, out)
    return report
