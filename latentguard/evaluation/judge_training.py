"""``train.py judge``: fit the coherence, compliance and learned judges on the gold train split.

- coherence: a logistic head on :func:`latentguard.evaluation.judges.coherence_inputs`, its threshold chosen on
  out-of-fold predictions;
- compliance: the refusal window (words before / after the first marker) that best matches the
  ``refused`` labels, then the on-topic cosine thresholds that best match ``harmful`` (harmful
  requests) and ``helpful`` (benign requests), given that refusal rule and the coherence judge;
- learned: one logistic head per label on one of the feature sets of
  :data:`latentguard.evaluation.judges.HEAD_INPUTS` (embeddings and hand-made features, or the hand-made ones alone;
  for coherence, what the answer alone says), the feature set, L2 strength and threshold chosen by
  cross-validation grouped by request (no request in two folds).

Writes ``judges.json`` atomically (default: the user cache, where the judges look first) with the
out-of-fold agreement on the train split and the SHA-256 of the gold file it was fitted on. The dev
split is never read here.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latentguard.common.storage import atomic_write_json, user_cache_dir
from latentguard.evaluation.gold import GOLD_FILE, GoldRow, agreement, load_gold
from latentguard.evaluation.judge_features import PairFeatures
from latentguard.evaluation.judges import HEAD_INPUTS, INPUTS, coherence_inputs, compliance_refused
from latentguard.guards.linear_head import LinearHead


@dataclass
class JudgeTrainConfig:
    """Fit the judges on the gold train split."""

    gold: str = ""
    """Gold file (empty = the shipped latentguard/evaluation/data/gold/gold.jsonl)."""
    out: str = ""
    """Output file (empty = <cache>/judges/judges.json, which the judges read before the shipped one)."""
    cs: str = "0.001,0.003,0.01,0.03,0.1,0.3,1"
    """Candidate inverse L2 strengths of the logistic heads (comma-separated)."""
    folds: int = 5
    """Cross-validation folds, grouped by request."""
    seed: int = 0
    """Fold assignment seed."""

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        try:
            values = [float(c) for c in self.cs.split(",")]
        except ValueError as err:
            raise ValueError(f"cs must be comma-separated numbers, got {self.cs!r}") from err
        if not values or min(values) <= 0:
            raise ValueError(f"cs must be positive numbers, got {self.cs!r}")


def _folds(rows: list[GoldRow], k: int, seed: int) -> np.ndarray:
    """(N,) fold of each row, by a hash of its request (grouped: a request's answers share a fold)."""
    return np.array([int(hashlib.sha256(f"{seed}|{r.prompt}".encode()).hexdigest()[:8], 16) % k for r in rows])


def _fit_head(x: np.ndarray, y: np.ndarray, c: float) -> LinearHead:
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    model.fit((x - mean) / scale, y)
    return LinearHead.from_numpy(model.coef_[0], model.intercept_[0], mean, scale)


def _best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The threshold (among the predictions' own values, midpoints) with the best accuracy."""
    candidates = np.unique(np.concatenate([[0.5], (np.sort(p)[1:] + np.sort(p)[:-1]) / 2]))
    accuracy = [((p >= t) == y).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def fit_logistic(x: np.ndarray, y: np.ndarray, folds: np.ndarray, cs: list[float]) -> tuple[dict, dict]:
    """Choose C by grouped CV accuracy, then the threshold on out-of-fold predictions; fit on all rows.

    Returns the head (as a dict with its threshold) and the selection record.
    """
    if len(np.unique(y)) < 2:
        raise ValueError(f"cannot fit a head: all {len(y)} gold labels are {bool(y[0])}; the gold set needs both")
    scores = {}
    oof_by_c = {}
    for c in cs:
        oof = np.zeros(len(y))
        for fold in np.unique(folds):
            test = folds == fold
            if len(np.unique(y[~test])) < 2:
                oof[test] = y[~test].mean()
                continue
            oof[test] = _fit_head(x[~test], y[~test], c).risk(x[test])
        oof_by_c[c] = oof
        scores[c] = float(((oof >= 0.5) == y).mean())
    best = max(cs, key=lambda c: (scores[c], -c))
    threshold = _best_threshold(oof_by_c[best], y)
    head = _fit_head(x, y, best).to_dict() | {"threshold": threshold}
    oof_agreement = agreement(oof_by_c[best] >= threshold, y)
    return head, {"c": best, "cv_accuracy": scores, "threshold": threshold, "oof": oof_agreement}


def fit_compliance(f: dict, rows: list[GoldRow], coherent: np.ndarray) -> dict:
    """Grid-search the refusal window, then the on-topic thresholds (see the module docstring)."""
    refused_gold = np.array([r.refused for r in rows])
    best: dict[str, int] | None = None
    best_acc = -1.0
    for before in (0, 3, 8, 20, 1000):
        for after in (5, 10, 20, 40, 80, 1000):
            params = {"max_words_before": before, "max_words_after": after}
            acc = float((compliance_refused(f["refusal"], params) == refused_gold).mean())
            if acc > best_acc + 1e-12:
                best, best_acc = params, acc
    if best is None:  # every accuracy (>= 0) beats -1, unless there are no rows (NaN)
        raise ValueError("fit_compliance needs gold rows to fit on, got none")
    refused = compliance_refused(f["refusal"], best)
    attempt = ~refused & coherent
    out: dict[str, float] = dict(best)
    for target, label in (("harmful", "harmful"), ("helpful", "benign")):
        keep = np.array([r.label == label for r in rows])
        gold = np.array([bool(r.target(target)) for r in rows])[keep]
        cos, att = f["cosine"][keep], attempt[keep]
        grid = np.round(np.arange(-0.1, 0.8, 0.02), 2)
        accs = [float(((att & (cos >= t)) == gold).mean()) for t in grid]
        out[f"topic_{target}"] = float(grid[int(np.argmax(accs))])
    return out


def fit_judges(config: JudgeTrainConfig, features: PairFeatures | None = None) -> tuple[dict, Path]:
    """Fit every judge on the gold train split and write ``judges.json``; returns (bank, path)."""
    gold_path = Path(config.gold) if config.gold else GOLD_FILE
    rows = load_gold(gold_path, "train")
    if not rows:
        raise ValueError(f"{gold_path} has no train rows to fit on")
    features = features or PairFeatures()
    f = features.get([r.prompt for r in rows], [r.text for r in rows])
    folds = _folds(rows, config.folds, config.seed)
    cs = [float(c) for c in config.cs.split(",")]

    y_coh = np.array([r.coherent for r in rows])
    coherence_head, coherence_sel = fit_logistic(coherence_inputs(f), y_coh, folds, cs)
    coherent = LinearHead.from_dict(coherence_head).risk(coherence_inputs(f)) >= coherence_head["threshold"]
    compliance = fit_compliance(f, rows, coherent)

    heads, selection = {}, {}
    for target in ("harmful", "refused", "coherent", "helpful"):
        keep = np.array([r.target(target) is not None for r in rows])
        y = np.array([bool(r.target(target)) for r in rows])[keep]
        fits = {name: fit_logistic(INPUTS[name](f)[keep], y, folds[keep], cs) for name in HEAD_INPUTS[target]}
        name = max(fits, key=lambda n: (fits[n][1]["oof"]["accuracy"], n in ("compact", "text")))
        heads[target] = fits[name][0] | {"inputs": name}
        selection[target] = fits[name][1] | {"inputs": name, "oof_accuracy_by_inputs": {
            n: fit[1]["oof"]["accuracy"] for n, fit in fits.items()}}

    bank = {
        "version": 1,
        "fitted_on": {"gold_sha256": hashlib.sha256(gold_path.read_bytes()).hexdigest(), "train_rows": len(rows),
                      "config": asdict(config)},
        "coherence": {"head": {k: v for k, v in coherence_head.items() if k != "threshold"},
                      "threshold": coherence_head["threshold"], "selection": coherence_sel},
        "compliance": compliance,
        "learned": {"heads": heads, "selection": selection},
    }
    out = Path(config.out) if config.out else user_cache_dir() / "judges" / "judges.json"
    atomic_write_json(out, bank)
    return bank, out
