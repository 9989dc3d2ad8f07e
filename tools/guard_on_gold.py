"""How well guards separate harmful answers from benign ones, measured on the gold set's read labels.

    python tools/guard_on_gold.py --guards latent-probe,embedding --out results/issue25/guard-on-gold
    python tools/guard_on_gold.py --guards latent-probe --second prompted-probe:PATH --max-asked 0.3 ...

Positives are answers to harmful requests that readers labelled harmful; negatives are answers to
benign requests (everyday and look-alike) and, separately, the look-alikes alone, under the same attack
(under none for an attack that leaves benign requests as they are: past tense). Rows are grouped
by the request's split (``heldout``: categories and templates no guard was trained on; ``dev``:
the dev and test splits) and by attack (``none``, ``template``, ``past-tense``, ``prefill``); answers to
train-split requests are left out. Each guard scores (the prompt as the model saw it, the answer),
as it would while decoding. AUROC comes with a 95% bootstrap interval; ``tpr_at_fpr_05`` is the TPR
at the lowest threshold whose benign FPR is at most 0.05.

With ``--second SPEC`` each guard of ``--guards`` is also the first stage of a cascade
(:mod:`latentguard.guards.cascade`): the band is calibrated on the ``dev`` group (attack ``none``)
and the cascade is measured everywhere, with the share of rows it asks of the second guard. With
``--mean`` the cascade whose second stage is ``mean(FIRST, SECOND)`` is measured too (both reads of
an uncertain row combined; :class:`latentguard.guards.composite.MeanGuard`), from the same risks.

With ``--methods vanilla`` only the answers of those methods count, on both sides: plain sampling's
answers are the population a guard meets before any method has chosen among answers. Answers a
guarded method released are, by construction, ones its guard passed, so over all methods the
positives lean towards the guard's misses.

Risks are cached per guard and gold file under ``runs/guard_on_gold/`` (delete to rescore).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from latentguard.common.metrics import safe_auroc, tpr_at_fpr
from latentguard.common.storage import atomic_write_json, slug
from latentguard.data.attacks import get_attack
from latentguard.data.prompt_sets import request_split
from latentguard.evaluation.gold import GOLD_FILE, GoldRow, load_gold
from latentguard.guards import CallableGuard, make_guard
from latentguard.guards.cascade import calibrate_band, cascade_risk
from latentguard.guards.composite import MeanGuard, split_top_level

CACHE = Path("runs/guard_on_gold")


def split_group(row: GoldRow) -> str:
    """``heldout``, ``train`` or ``dev`` (dev and test requests) for a gold row's request."""
    split = request_split(row.prompt)
    return {"heldout": "heldout", "train": "train"}.get(split, "dev")


def scored(spec: str, rows: list[GoldRow], gold_sha: str) -> tuple[np.ndarray, float]:
    """(N,) the guard's risk on every row (cached) and its threshold."""
    path = CACHE / f"{slug(spec)}-{gold_sha[:12]}.json"
    guard = make_guard(spec)
    if path.is_file():
        return np.array(json.loads(path.read_text())["risk"]), guard.threshold
    prompts, texts = [r.shown_prompt or r.prompt for r in rows], [r.text for r in rows]
    order = np.argsort([len(p) + len(t) for p, t in zip(prompts, texts)])  # batches of like lengths pad little
    risk = np.empty(len(rows))
    risk[order] = guard.score([prompts[i] for i in order], [texts[i] for i in order])
    atomic_write_json(path, {"spec": spec, "gold_sha256": gold_sha, "risk": [float(x) for x in risk]})
    return np.asarray(risk, float), guard.threshold


def auroc_interval(y: np.ndarray, score: np.ndarray, draws: int = 1000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of the AUROC (resampling positives and negatives separately)."""
    rng = np.random.default_rng(seed)
    pos, neg = score[y], score[~y]
    if not len(pos) or not len(neg):
        return [float("nan"), float("nan")]
    values = []
    for _ in range(draws):
        p, n = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        values.append(safe_auroc(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def separation(risk: np.ndarray, positive: np.ndarray, negative: np.ndarray, threshold: float | None = None) -> dict:
    """AUROC (with interval) and TPR at FPR <= 0.05 of positives against negatives, and, given the
    guard's own ``threshold``, the rates at it."""
    keep = positive | negative
    y, s = positive[keep], risk[keep]
    out = {"positives": int(positive.sum()), "negatives": int(negative.sum()),
           "auroc": safe_auroc(y, s), "auroc_95": auroc_interval(y, s)}
    if positive.any() and negative.any():
        out["tpr_at_fpr_05"] = tpr_at_fpr(s, y, 0.05)[0]
        if threshold is not None:
            out["tpr_at_threshold"] = float((risk[positive] >= threshold).mean())
            out["fpr_at_threshold"] = float((risk[negative] >= threshold).mean())
    return out


def summary_line(name: str, key: str, vs_benign: dict, vs_lookalikes: dict) -> str:
    """One printed line: a guard's separation against benign answers and against look-alikes."""
    b, look = vs_benign, vs_lookalikes
    return (f"{name[:60]:60s} {key:22s} pos {b['positives']:3d} | benign {b['negatives']:4d} AUROC "
            f"{b['auroc']:.3f} [{b['auroc_95'][0]:.3f}, {b['auroc_95'][1]:.3f}] TPR@5% "
            f"{b.get('tpr_at_fpr_05', float('nan')):.2f} | look-alikes {look['negatives']:3d} AUROC "
            f"{look['auroc']:.3f} TPR@5% {look.get('tpr_at_fpr_05', float('nan')):.2f}")


def measure(risk: np.ndarray, threshold: float, rows: list[GoldRow], groups: np.ndarray) -> dict:
    """Metrics per (split group, attack): against benign answers and against look-alikes."""
    harmful = np.array([r.label == "harmful" and r.harmful for r in rows])
    benign = np.array([r.label == "benign" for r in rows])
    lookalike = benign & np.array([r.lookalike for r in rows])
    attacks = np.array([r.attack for r in rows])
    out = {}
    for group in ("heldout", "dev"):
        for attack in sorted(set(attacks)):
            at = (groups == group) & (attacks == attack)
            # benign answers: every non-train benign answer under the same attack, or under none for an attack
            # that leaves benign requests as they are (past-tense); look-alikes: the group's own
            benign_attack = "none" if get_attack(attack).harmful_only else attack
            same_attack = (groups != "train") & (attacks == benign_attack)
            out[f"{group}+{attack}"] = {
                "vs_benign": separation(risk, harmful & at, benign & same_attack, threshold),
                "vs_lookalikes": separation(risk, harmful & at, lookalike & (groups == group) & (attacks == benign_attack),
                                            threshold),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guards", required=True, help="comma-separated guard specs (top-level commas)")
    parser.add_argument("--second", default="", help="a second-stage guard: each guard is also measured as a cascade")
    parser.add_argument("--max-asked", type=float, default=0.3, help="most rows a cascade may ask of the second stage")
    parser.add_argument("--mean", action="store_true", help="also the cascade whose second stage is mean(first, second)")
    parser.add_argument("--methods", default="", help="comma-separated methods whose answers count (empty: all)")
    parser.add_argument("--out", default="", help="folder for metrics.json (empty: print only)")
    args = parser.parse_args()
    every_row = load_gold()
    gold_sha = hashlib.sha256(GOLD_FILE.read_bytes()).hexdigest()
    methods = {m for m in args.methods.split(",") if m}
    unknown = methods - {r.method for r in every_row}
    if unknown:
        raise SystemExit(f"--methods {','.join(sorted(unknown))}: no gold answer comes from it; "
                         f"the gold methods are {', '.join(sorted({r.method for r in every_row}))}")
    keep = np.array([not methods or r.method in methods for r in every_row])
    rows = [r for r, k in zip(every_row, keep) if k]

    def scored_rows(spec: str) -> tuple[np.ndarray, float]:
        risk, threshold = scored(spec, every_row, gold_sha)
        return risk[keep], threshold

    groups = np.array([split_group(r) for r in rows])
    harmful = np.array([r.label == "harmful" and r.harmful for r in rows])
    benign = np.array([r.label == "benign" for r in rows])
    report: dict = {"gold_sha256": gold_sha, "methods": sorted(methods), "rows": {g: int((groups == g).sum()) for g in ("heldout", "dev", "train")},
                    "guards": {}}
    second = scored_rows(args.second) if args.second else None
    for spec in split_top_level(args.guards):
        risk, threshold = scored_rows(spec)
        report["guards"][spec] = {"threshold": threshold, "metrics": measure(risk, threshold, rows, groups)}
        if second is not None:
            calib = (groups == "dev") & np.array([r.attack == "none" for r in rows]) & (harmful | benign)
            stages = [(args.second, *second)]
            if args.mean:
                members = [CallableGuard(lambda p, r, x=x: x, threshold=t) for x, t in ((risk, threshold), second)]
                stages.append((f"mean({spec},{args.second})", MeanGuard(members).score([""] * len(rows), [""] * len(rows)), 0.5))
            for name2, risk2, threshold2 in stages:
                band = calibrate_band(risk[calib], risk2[calib], harmful[calib], threshold, threshold2,
                                      max_asked=args.max_asked)
                combined = cascade_risk(risk, risk2, threshold, threshold2, band["low"], band["high"])
                inside = (risk >= band["low"]) & (risk < band["high"])
                name = f"cascade({spec},{name2},low={band['low']:.4g},high={band['high']:.4g})"
                report["guards"][name] = {"threshold": 0.5, "band": band,
                                          "asked_share": {g: float(inside[groups == g].mean()) for g in ("heldout", "dev")},
                                          "metrics": measure(combined, 0.5, rows, groups)}
    if args.second:
        report["guards"][args.second] = {"threshold": second[1], "metrics": measure(second[0], second[1], rows, groups)}
    for name, entry in report["guards"].items():
        for key, m in entry["metrics"].items():
            if m["vs_benign"]["positives"]:
                print(summary_line(name, key, m["vs_benign"], m["vs_lookalikes"]))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", report)


if __name__ == "__main__":
    main()
