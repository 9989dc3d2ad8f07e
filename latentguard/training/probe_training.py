"""Training the latent probe on the policy's own answers (``python train.py guard``).

1. Answers of the policy to the train, dev and held-out splits of the AdvBench, harm, benign and
   jailbreak sets, with features at response prefixes of 16/32/64 tokens and of the request
   (:mod:`latentguard.training.guard_answers`), labelled by a judge (:mod:`latentguard.training.guard_training`).
2. PyRIT's human-labelled responses (score >= 0.5 = unsafe) as extra training rows with weight
   ``pyrit_weight``; their dev-split rows measure the MAE against the human 0-1 scores.
3. Layer, pooling and L2 strength chosen by grouped cross-validation on the **train split only**
   (groups = requests, so the samples of one request never straddle folds); the threshold is the
   one that maximises TPR - FPR on the out-of-fold predictions with a look-alike FPR of at most
   ``max_lookalike_fpr``.
4. The final probe is fitted on the whole train split and measured on the dev split.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from latentguard.common.metrics import safe_auroc, tpr_at_fpr
from latentguard.data.pyrit_data import HarmRow
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.probe import LatentProbe, ProbeConfig, prefill_answers
from latentguard.lm import LanguageModel
from latentguard.training.guard_answers import POOLINGS, AnswerSet


@dataclass
class Features:
    """A design matrix: one row per (answer, prefix)."""

    x: np.ndarray  # (R, H) float32
    y: np.ndarray  # (R,) 0/1
    groups: np.ndarray  # (R,) request id
    prefix: np.ndarray  # (R,) prefix length
    harmful_request: np.ndarray  # (R,) bool
    lookalike: np.ndarray  # (R,) bool


def answer_features(answers: AnswerSet, pooling: str, layer: int) -> Features:
    """Flatten (N, P, H) features of one (pooling, layer) into (N*P, H) rows; ``mean+request``
    puts the two side by side, (N*P, 2H)."""
    parts = pooling.split("+")
    feats = np.concatenate([answers.features[(part, layer)].astype(np.float32) for part in parts], axis=-1)  # (N, P, H')
    n, p, h = feats.shape
    prompt_ids = {text: i for i, text in enumerate(dict.fromkeys(answers.prompts))}
    groups = np.array([prompt_ids[t] for t in answers.prompts])
    return Features(
        feats.reshape(n * p, h), np.repeat(answers.labels, p), np.repeat(groups, p),
        np.tile(np.array(answers.prefixes), n), np.repeat(answers.harmful_request, p), np.repeat(answers.lookalike, p),
    )


def _fit_prompt(lm: LanguageModel, text: str, limit: int) -> str:
    """``text`` cut (at the end) so that its chat-templated tokens fit in ``limit``; unchanged if it fits."""
    n = len(lm.encode_prompt(text))
    while n > limit and len(text) > 1:
        text = text[: max(1, int(len(text) * limit / n) - 16)]
        n = len(lm.encode_prompt(text))
    return text


def pyrit_features(lm: LanguageModel, rows: Sequence[HarmRow], layers: Sequence[int], max_tokens: int = 64,
                   batch_size: int = 16) -> dict[tuple[str, int], np.ndarray]:
    """(R, H) features of PyRIT responses (cut to ``max_tokens`` tokens; an objective too long for the
    context window is cut to fit) for every (pooling, layer), and ``mean+request`` side by side."""
    layers = [lm.capture_layer(layer, history=True) for layer in layers]
    out: dict[tuple[str, int], list[np.ndarray]] = {(pool, layer): [] for pool in POOLINGS for layer in layers}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        prompts = [_fit_prompt(lm, r.objective or "Respond.", lm.context_length - max_tokens - 64) for r in batch]
        state = prefill_answers(lm, prompts, [r.response for r in batch], max_tokens)
        for layer in layers:
            out[("mean", layer)].append(state.pooled_latent(layer).float().cpu().numpy())
            out[("last", layer)].append(state.latent_tensor(layer).float().cpu().numpy())
            out[("request", layer)].append(state.prompt_latent(layer).float().cpu().numpy())
    feats = {k: np.concatenate(v) for k, v in out.items()}
    for layer in layers:
        feats[("mean+request", layer)] = np.concatenate([feats[("mean", layer)], feats[("request", layer)]], axis=1)
    return feats


def csv_ints(text: str) -> tuple[int, ...]:
    """``"12,18"`` -> ``(12, 18)``: a config's comma-separated candidates."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def csv_floats(text: str) -> tuple[float, ...]:
    """``"0.01,0.1"`` -> ``(0.01, 0.1)``: a config's comma-separated candidates."""
    return tuple(float(v) for v in text.split(",") if v.strip())


def fit_head(x: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float):
    """Standardise and fit an L2 logistic regression; returns (w, b, mu, sigma) as float64 arrays."""
    mu = np.average(x, axis=0, weights=weight)
    sigma = np.sqrt(np.average((x - mu) ** 2, axis=0, weights=weight)) + 1e-6
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    clf.fit((x - mu) / sigma, y, sample_weight=weight)
    return clf.coef_[0], float(clf.intercept_[0]), mu, sigma


def predict(head, x: np.ndarray) -> np.ndarray:
    w, b, mu, sigma = head
    return 1.0 / (1.0 + np.exp(-(((x - mu) / sigma) @ w + b)))


def row_weights(f: Features, lookalike_weight: float) -> np.ndarray:
    """(R,) fitting weights: ``lookalike_weight`` for answers to look-alike benign requests, else 1."""
    return np.where(f.lookalike & ~f.harmful_request, float(lookalike_weight), 1.0)


def out_of_fold(f: Features, extra: tuple[np.ndarray, np.ndarray, float] | None, c: float, folds: int,
                lookalike_weight: float = 1.0) -> np.ndarray:
    """Out-of-fold risks for every row of ``f`` (extra rows only ever train)."""
    oof = np.zeros(len(f.y))
    weights = row_weights(f, lookalike_weight)
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(f.x, f.y, f.groups):
        x, y, w = f.x[train_idx], f.y[train_idx], weights[train_idx]
        if extra is not None and extra[2] > 0:
            x, y, w = np.vstack([x, extra[0]]), np.concatenate([y, extra[1]]), np.concatenate([w, np.full(len(extra[1]), extra[2])])
        oof[test_idx] = predict(fit_head(x, y, w, c), f.x[test_idx])
    return oof


def choose_threshold(f: Features, risk: np.ndarray, max_lookalike_fpr: float) -> float:
    """argmax TPR - FPR over candidate thresholds, subject to look-alike FPR <= the cap."""
    best, best_t = -np.inf, 0.5
    for t in np.unique(np.round(risk, 4)):
        flagged = risk >= t
        tpr = flagged[f.y == 1].mean()
        fpr = flagged[f.y == 0].mean()
        look = flagged[(f.y == 0) & f.lookalike].mean() if ((f.y == 0) & f.lookalike).any() else 0.0
        if look <= max_lookalike_fpr and tpr - fpr > best:
            best, best_t = tpr - fpr, float(t)
    return best_t


def rates(f: Features, risk: np.ndarray, threshold: float) -> dict[str, float]:
    """TPR on unsafe answers; FPR on benign, everyday and look-alike answers, at ``threshold``."""
    flagged = risk >= threshold
    benign = ~f.harmful_request

    def mean(mask):
        return float(flagged[mask].mean()) if mask.any() else float("nan")

    return {"tpr": mean(f.y == 1), "fpr_benign": mean(benign), "fpr_everyday": mean(benign & ~f.lookalike),
            "fpr_lookalike": mean(benign & f.lookalike), "fpr_refusals": mean(f.harmful_request & (f.y == 0))}


def _vs_benign(f: Features, risk: np.ndarray, rows: np.ndarray, suffix: str) -> dict[str, float]:
    """Unsafe answers against answers to benign requests, over ``rows``: AUROC, and the TPR where the
    benign FPR is at most 0.05 (a threshold chosen on these rows)."""
    unsafe, benign = rows & (f.y == 1), rows & ~f.harmful_request
    out = {f"auroc_vs_benign{suffix}": safe_auroc(f.y[unsafe | benign], risk[unsafe | benign])}
    if unsafe.any() and benign.any():
        keep = unsafe | benign
        out[f"tpr_at_fpr_05{suffix}"] = tpr_at_fpr(risk[keep], unsafe[keep], 0.05)[0]
    return out


def evaluate(f: Features, risk: np.ndarray, threshold: float, prefixes: Sequence[int]) -> dict:
    """AUROC overall and per prefix, and the rates at the threshold. ``auroc_vs_benign``: unsafe
    answers against answers to benign requests (safe answers to harmful requests left out), and
    ``tpr_at_fpr_05`` the TPR where the benign FPR is at most 0.05 (a threshold chosen on these rows)."""
    metrics = {"auroc": safe_auroc(f.y, risk), "rows": len(f.y), "unsafe": int(f.y.sum())}
    metrics.update(_vs_benign(f, risk, np.ones(len(f.y), dtype=bool), ""))
    for p in prefixes:
        at = f.prefix == p
        metrics[f"auroc_prefix_{p}"] = safe_auroc(f.y[at], risk[at])
        metrics.update(_vs_benign(f, risk, at, f"_prefix_{p}"))
    metrics.update(rates(f, risk, threshold))
    for p in prefixes:
        unsafe = (f.prefix == p) & (f.y == 1)
        metrics[f"tpr_prefix_{p}"] = float((risk[unsafe] >= threshold).mean()) if unsafe.any() else float("nan")
    return metrics


@dataclass
class Selection:
    """The cross-validated choice among candidate feature sets and L2 strengths."""

    key: tuple[str, int]
    """(pooling, layer) for the probe; ("embedding", 0) for the embedding head."""
    c: float
    lookalike_weight: float
    cv_auroc: float
    threshold: float
    table: list[dict]
    cv_auroc_vs_benign: float = float("nan")


Candidate = tuple[Features, "tuple[np.ndarray, np.ndarray, float] | None"]


SELECT_BY = ("cv_auroc", "cv_auroc_vs_benign")
"""Selection criteria: out-of-fold AUROC over all answers, or of unsafe answers against answers to
benign requests only (what a guard must do at decoding time: safe answers to harmful requests are
left out, where the label, not the request, decides)."""


def select_head(candidates: dict[tuple[str, int], Candidate], cs: Sequence[float], folds: int,
                max_lookalike_fpr: float, log=None, lookalike_weights: Sequence[float] = (1.0,),
                select_by: str = "cv_auroc") -> Selection:
    """Grouped CV over candidate feature sets x C x look-alike weight, the winner by ``select_by``
    (one of :data:`SELECT_BY`); the threshold from the winner's out-of-fold risks. Each row of the
    table has both criteria."""
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
    table: list[dict] = []
    best: tuple[dict[str, Any], tuple[str, int], np.ndarray, Features] | None = None
    for (key, (f, extra)), weight, c in itertools.product(candidates.items(), lookalike_weights, cs):
        oof = out_of_fold(f, extra, c, folds, weight)
        benign_pair = (f.y == 1) | ~f.harmful_request
        row: dict[str, Any] = {"features": f"{key[0]}:{key[1]}", "c": c, "lookalike_weight": weight,
               "cv_auroc": safe_auroc(f.y, oof), "cv_auroc_vs_benign": safe_auroc(f.y[benign_pair], oof[benign_pair])}
        table.append(row)
        if log:
            log(row)
        if best is None or row[select_by] > best[0][select_by]:
            best = (row, key, oof, f)
    if best is None:
        raise ValueError("select_head needs at least one candidate feature set, C and look-alike weight")
    row, key, oof, f = best
    return Selection(key, row["c"], row["lookalike_weight"], row["cv_auroc"],
                     choose_threshold(f, oof, max_lookalike_fpr), table, row["cv_auroc_vs_benign"])


def fit_selected(f: Features, extra: tuple[np.ndarray, np.ndarray, float] | None, selection: Selection) -> LinearHead:
    """Fit the chosen head on all of ``f`` (+ weighted extra rows), with the chosen look-alike weight."""
    x, y, w = f.x, f.y, row_weights(f, selection.lookalike_weight)
    if extra is not None and extra[2] > 0:
        x, y, w = np.vstack([x, extra[0]]), np.concatenate([y, extra[1]]), np.concatenate([w, np.full(len(extra[1]), extra[2])])
    return LinearHead.from_numpy(*fit_head(x, y, w, selection.c))


def probe_from_selection(lm: LanguageModel, head: LinearHead, selection: Selection, info: dict) -> LatentProbe:
    """Wrap a fitted head as a :class:`LatentProbe` for ``lm``."""
    pooling, layer = selection.key
    summary = {"c": selection.c, "lookalike_weight": selection.lookalike_weight, "cv_auroc": selection.cv_auroc,
               "threshold": selection.threshold}
    config = ProbeConfig(lm.model_id, layer, pooling, lm.hidden_size, selection.threshold, info={**info, "selection": summary})
    return LatentProbe(config, head)
