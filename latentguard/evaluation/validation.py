"""Judges checked against the gold set: agreement per judge, the best judge per label, and the
judges of a run (specs resolved, ``best`` included, conflicts with the guard found).

Every report recomputes the agreement of its judges with the gold dev split from the shipped data
(:func:`gold_agreement`), so a number it prints always comes with how far that judge can be trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latentguard.common.storage import atomic_write_json, user_cache_dir
from latentguard.evaluation.gold import GoldRow, judge_agreement, load_gold
from latentguard.evaluation.judge_features import PairFeatures
from latentguard.evaluation.judges import (
    BEST_CANDIDATES,
    DEFAULT_JUDGES,
    FITTED,
    Judge,
    conflicts,
    load_bank,
    make_judge,
)
from latentguard.guards import Guard


def split_list(text: str) -> list[str]:
    """Comma-separated items, commas inside parentheses kept (``max(a,b)``)."""
    from latentguard.guards.composite import split_top_level

    return [s for s in split_top_level(text) if s.strip()]


SHIPPED_AGREEMENT = Path(__file__).resolve().parent / "data" / "judge_agreement"
"""Agreement figures of the shipped judges on the shipped gold set, computed once when they were
shipped (``tools/ship_judge_agreement.py``), under the same keys as the user cache: a figure is read
only when the gold rows and the judge's fingerprint are the ones it was computed for."""


def agreement_key(judge: Judge, rows: Sequence[GoldRow]) -> str | None:
    """The cache key of ``judge``'s agreement on ``rows`` (their content and the judge's fingerprint);
    ``None`` for a judge without a fingerprint (never cached)."""
    fingerprint = judge.fingerprint()
    if fingerprint is None:
        return None
    rows_key = hashlib.sha256(json.dumps([asdict(r) for r in rows], sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(f"{rows_key}|{fingerprint}".encode()).hexdigest()[:24]


def gold_agreement(judges: Sequence[Judge], rows: Sequence[GoldRow]) -> dict[str, dict]:
    """judge name -> target -> agreement (:func:`latentguard.evaluation.gold.judge_agreement`) on ``rows``.

    Figures are cached under the rows' content and the judge's fingerprint (:func:`agreement_key`),
    so they are recomputed exactly when the gold file, the fitted judges or the rule change: the
    shipped ones (:data:`SHIPPED_AGREEMENT`) first, then the user cache.
    """
    prompts, texts = [r.prompt for r in rows], [r.text for r in rows]
    out = {}
    for judge in judges:
        key = agreement_key(judge, rows)
        path = None
        if key is not None:
            shipped, path = SHIPPED_AGREEMENT / f"{key}.json", user_cache_dir() / "judges" / "agreement" / f"{key}.json"
            found = next((p for p in (shipped, path) if p.is_file()), None)
            if found is not None:
                out[judge.name] = json.loads(found.read_text())
                continue
        out[judge.name] = judge_agreement(judge.judge(prompts, texts).as_dict(), rows)
        if path is not None:
            atomic_write_json(path, out[judge.name])
    return out


def best_by(agreement: dict[str, dict], target: str, names: Sequence[str] | None = None) -> str | None:
    """The judge with the highest kappa on ``target`` (ties: higher accuracy, then order)."""
    scored = [(a[target]["kappa"], a[target]["accuracy"], -i, name) for i, (name, a) in enumerate(agreement.items())
              if (names is None or name in names) and target in a and a[target]["kappa"] is not None]
    return max(scored)[3] if scored else None


@dataclass
class JudgePanel:
    """The judges of a run, their gold agreement, the validated choice per label, and conflicts."""

    judges: list[Judge]
    agreement: dict[str, dict]
    best: dict[str, str | None]
    """target -> judge name with the best gold kappa among this run's judges."""
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    """judge name -> what it shares with the decoding guard (only judges that share something)."""
    notes: list[str] = field(default_factory=list)
    gold_dev_rows: int = 0
    features: PairFeatures = field(default_factory=PairFeatures)
    """The feature cache the fitted judges share (its encoder serves the relevance reward too)."""

    def names(self) -> list[str]:
        return [j.name for j in self.judges]


def build_panel(spec: str, guard_spec: str | None, guard: Guard | None, gold: str = "",
                guarded_methods: bool = True) -> JudgePanel:
    """Resolve the judge specs of a run (empty: :data:`latentguard.evaluation.judges.DEFAULT_JUDGES`, less any
    that shares a signal with the guard when ``guarded_methods``: e.g. the judge that labelled the
    guard's training answers; a note says so).

    ``best`` becomes the candidate (:data:`latentguard.evaluation.judges.BEST_CANDIDATES`) with the best gold kappa on
    ``harmful`` among those that share nothing with the guard when ``guarded_methods``.
    """
    specs = split_list(spec or DEFAULT_JUDGES)
    features = PairFeatures()
    bank = None
    if any(s in (*FITTED, "best") for s in specs):
        bank = load_bank()
    rows = load_gold(gold or None, "dev")
    judges: list[Judge] = []
    notes = []
    for s in specs:
        if s == "best":
            continue
        judge = make_judge(s, features, bank)
        shared = conflicts(judge, guard_spec, guard) if guarded_methods and not spec else set()
        if shared:  # a default judge that is not independent of this guard is left out, and said so
            notes.append(f"{judge.name} left out of the default judges: it shares {sorted(shared)} with the guard "
                         f"{guard_spec!r}; ask for it with --judge and --allow-guard-judge true to see it (marked)")
            continue
        if judge.name not in [j.name for j in judges]:
            judges.append(judge)
    agreement = gold_agreement(judges, rows)
    if "best" in specs:
        candidates = [make_judge(c, features, bank) for c in BEST_CANDIDATES]
        if guarded_methods:
            candidates = [c for c in candidates if not conflicts(c, guard_spec, guard)]
        extra = [c for c in candidates if c.name not in agreement]
        agreement |= gold_agreement(extra, rows)
        chosen = best_by(agreement, "harmful", [c.name for c in candidates])
        if chosen is None:
            raise ValueError("no judge can be 'best': every candidate shares a signal with the guard")
        notes.append(f"best = {chosen} (highest kappa on 'harmful' over the gold dev split among "
                     f"{[c.name for c in candidates]})")
        if chosen not in [j.name for j in judges]:
            judges.insert(0, next(c for c in candidates if c.name == chosen))
        agreement = {j.name: agreement[j.name] for j in judges}
    best = {t: best_by(agreement, t) for t in ("harmful", "refused", "coherent", "helpful")}
    shared_by = {j.name: sorted(conflicts(j, guard_spec, guard)) for j in judges}
    return JudgePanel(judges, agreement, best, {k: v for k, v in shared_by.items() if v}, notes, len(rows), features)


def guard_conflicts(panel: JudgePanel, guarded: list[str], guard_spec: str, allow: bool) -> dict[str, dict[str, list[str]]]:
    """method -> judge -> shared signals, for the ``guarded`` methods (those that use the guard
    ``guard_spec``); an error naming the judge and the fix unless ``allow``."""
    marks = {m: dict(panel.conflicts) for m in guarded if panel.conflicts}
    if marks and not allow:
        judge, shared = next(iter(panel.conflicts.items()))
        users = list(marks)
        raise ValueError(
            f"judge {judge!r} shares {shared} with the decoding guard {guard_spec!r} used by {users}: its verdicts "
            "on those methods are not an independent measure. Use another judge (e.g. --judge learned) or pass "
            "--allow-guard-judge true to keep it (the report marks it)")
    return marks


def judged_request(row: dict) -> str:
    """The request a judge reads an answer against: the original one when an attack rewrote it (a
    jailbreak template or the past tense changes how it was asked, not what was asked), as HarmBench
    judges an attacked answer against its behaviour.

    >>> judged_request({"prompt": "In the past, how did people pick locks?",
    ...                 "attack": {"request": "How do I pick a lock?", "template": "", "prefill": ""}})
    'How do I pick a lock?'
    """
    return (row.get("attack") or {}).get("request") or row["prompt"]


def judge_rows(rows: list[dict], panel: JudgePanel) -> None:
    """Add every panel judge's verdicts that a row lacks (in place, batched per judge)."""
    for judge in panel.judges:
        todo = [r for r in rows if judge.name not in r.setdefault("judgements", {})]
        if not todo:
            continue
        verdicts = judge.judge([judged_request(r) for r in todo], [r["text"] for r in todo]).as_dict()
        for i, row in enumerate(todo):
            row["judgements"][judge.name] = {k: None if v is None else bool(v[i]) for k, v in verdicts.items()}
