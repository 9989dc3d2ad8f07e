"""``train.py gate``: the request gate (:mod:`latentguard.guards.request_gate`), fitted on requests.

Rows: every labelled request (:data:`latentguard.data.prompt_sets.LABELLED_SETS`), harmful against
benign, its features read from one prefill of the chat-formatted request (no answer is sampled, so
the whole job takes minutes, not the guard's half hour). Candidates (pooling, layer, look-alike
weight, C) are chosen by cross-validation on the ``train`` requests with whole harm categories out per
fold (a look-alike is grouped with the category it was written against), maximising AUROC of harmful
requests against look-alikes. The threshold refuses at most ``max_lookalike_fpr`` of the *dev*
look-alikes. Dev and held-out figures are reported; held-out rows decide nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from latentguard.common.metrics import safe_auroc
from latentguard.data.prompt_sets import SPLITS, PromptRecord, labelled_records
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.request_gate import GATE_POOLINGS, RequestGate, cached_gate_path, request_features
from latentguard.lm import DEFAULT_MODEL, LanguageModel, load_lm
from latentguard.training.probe_training import csv_floats, csv_ints, fit_head, predict


@dataclass
class GateTrainConfig:
    """Train the request gate: a probe on the request's latents that refuses before any token."""

    model: str = DEFAULT_MODEL
    """Model whose request latents the gate reads."""
    out: str = ""
    """Output JSON file; empty = the user cache, where ``gate=request`` finds it."""
    poolings: str = "request,last"
    """Candidate request poolings: 'request' (the hidden state at the request's last token, before any forced assistant text), 'last' (at the last template token, after it)."""
    layers: str = "12,15,18,21,24"
    """Candidate layers (comma-separated hidden-state indices)."""
    cs: str = "0.003,0.01,0.03,0.1"
    """Candidate inverse L2 strengths (comma-separated)."""
    lookalike_weights: str = "1,3,10"
    """Candidate fitting weights of look-alike requests (comma-separated)."""
    folds: int = 5
    """Category-grouped cross-validation folds on the train requests."""
    max_lookalike_fpr: float = 0.03
    """Threshold: refuse at most this share of the dev look-alikes."""
    batch_size: int = 32
    """Requests per prefill forward."""
    limit: int = 0
    """At most this many requests per set, label and split (0 = all; for smoke tests)."""
    device: str = "cpu"
    """Where the model runs."""

    def __post_init__(self) -> None:
        unknown = [p for p in self.poolings.split(",") if p not in GATE_POOLINGS]
        if unknown or not self.poolings.strip():
            raise ValueError(f"poolings must be a comma-separated subset of {GATE_POOLINGS}, got {self.poolings!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.max_lookalike_fpr < 1:
            raise ValueError(f"max_lookalike_fpr must be in (0, 1), got {self.max_lookalike_fpr}")
        if any(w <= 0 for w in csv_floats(self.lookalike_weights)) or not csv_floats(self.lookalike_weights):
            raise ValueError(f"lookalike_weights must be positive numbers, got {self.lookalike_weights!r}")


def gate_records(limit: int = 0) -> list[PromptRecord]:
    """Every labelled request of every split (``limit`` per set, label and split for smoke tests)."""
    return [r for split in SPLITS for r in labelled_records(split, limit)]


def refusal_threshold(negatives: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold in (0, 1) at which at most ``max_fpr`` of ``negatives`` score at or above it:
    just above the ``floor(max_fpr * n) + 1``-th highest score.

    >>> round(refusal_threshold(np.array([0.1, 0.2, 0.3, 0.9]), 0.3), 6)  # one of four may pass: above 0.3
    0.300001
    """
    ranked = np.sort(np.asarray(negatives, dtype=float))[::-1]
    allowed = int(np.floor(max_fpr * len(ranked) + 1e-9))
    cut = ranked[allowed] + 1e-6 if allowed < len(ranked) else 1e-6
    return float(min(max(cut, 1e-6), 1 - 1e-6))


def _frontier(risk: np.ndarray, harmful: np.ndarray, looks: np.ndarray, threshold: float) -> dict:
    y = np.r_[np.ones(harmful.sum()), np.zeros(looks.sum())]
    return {"harmful": int(harmful.sum()), "lookalikes": int(looks.sum()),
            "auroc_vs_lookalikes": safe_auroc(y, np.r_[risk[harmful], risk[looks]]),
            "harmful_refused": float((risk[harmful] >= threshold).mean()) if harmful.any() else float("nan"),
            "lookalikes_refused": float((risk[looks] >= threshold).mean()) if looks.any() else float("nan")}


def train_gate(config: GateTrainConfig, lm: LanguageModel | None = None) -> tuple[RequestGate, Path]:
    """Fit, select, calibrate and save the request gate; returns it and where it was written."""
    lm = lm or load_lm(config.model, device=config.device)
    records = gate_records(config.limit)
    keys = [(p, layer) for p in config.poolings.split(",") for layer in csv_ints(config.layers)]
    feats = request_features(lm, [r.prompt for r in records], keys, config.batch_size)
    y = np.array([r.label == "harmful" for r in records], dtype=np.int64)
    split = np.array([r.split for r in records])
    look = np.array([r.lookalike for r in records])
    group = np.array([r.harm_category or r.category or r.prompt for r in records])
    train = np.flatnonzero(split == "train")
    scored = (y == 1) | look  # harmful against look-alikes: the gate's hard case
    if len(set(group[train])) < config.folds or y[train].min() == y[train].max():
        raise ValueError(f"the train requests have {len(set(group[train]))} categories and labels {sorted(set(y[train]))}: "
                         f"too few for {config.folds}-fold grouped CV; lower --folds or raise --limit")
    cv: list[dict[str, Any]] = []
    for key, weight, c in product(keys, csv_floats(config.lookalike_weights), csv_floats(config.cs)):
        x, w = feats[key], np.where(look, weight, 1.0)
        oof = np.full(len(records), np.nan)
        for tr, te in GroupKFold(n_splits=config.folds).split(train, y[train], group[train]):
            tr, te = train[tr], train[te]
            oof[te] = predict(fit_head(x[tr], y[tr], w[tr], c), x[te])
        rows = train[scored[train]]
        cv.append({"pooling": key[0], "layer": key[1], "lookalike_weight": weight, "c": c,
                   "cv_auroc_vs_lookalikes": safe_auroc(y[rows], oof[rows])})
    best = max(cv, key=lambda r: r["cv_auroc_vs_lookalikes"])
    key = (best["pooling"], best["layer"])
    w_, b_, mu, sigma = fit_head(feats[key][train], y[train], np.where(look, best["lookalike_weight"], 1.0)[train],
                                 best["c"])
    head = LinearHead.from_numpy(w_, b_, mu, sigma)
    risk = head.risk(feats[key])
    dev_looks = risk[(split == "dev") & look]
    if not len(dev_looks):
        raise ValueError("no dev look-alike requests to set the threshold on; raise --limit")
    threshold = refusal_threshold(dev_looks, config.max_lookalike_fpr)
    wrapped = np.array([bool(r.template) for r in records])
    metrics = {}
    for split_name in ("dev", "heldout"):
        at = split == split_name
        metrics[split_name] = _frontier(risk, at & (y == 1), at & look, threshold)
        for name, part in (("plain", ~wrapped), ("jailbreak", wrapped)):
            metrics[f"{split_name}/{name}"] = _frontier(risk, at & part & (y == 1), at & part & look, threshold)
    info = {"selected": best, "cv": cv, "max_lookalike_fpr": config.max_lookalike_fpr, "requests": len(records),
            "train_requests": len(train), "metrics": metrics, "recipe": "python train.py gate"}
    gate = RequestGate(lm.model_id, key[1], key[0], head, threshold, info)
    path = Path(config.out) if config.out else cached_gate_path(lm.model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    gate.save(path)
    return gate, path


def summary(gate: RequestGate) -> str:
    """One paragraph: what was selected and how it does on dev and held-out requests."""
    s, m = gate.info["selected"], gate.info["metrics"]
    lines = [f"request gate: {s['pooling']} pooling at layer {s['layer']}, look-alike weight {s['lookalike_weight']}, "
             f"C={s['c']} (CV AUROC vs look-alikes {s['cv_auroc_vs_lookalikes']:.3f}), threshold {gate.threshold:.4f}"]
    for name, row in m.items():
        lines.append(f"  {name}: AUROC vs look-alikes {row['auroc_vs_lookalikes']:.3f}; refuses {row['harmful_refused']:.0%} "
                     f"of {row['harmful']} harmful requests and {row['lookalikes_refused']:.1%} of {row['lookalikes']} look-alikes")
    return "\n".join(lines)
