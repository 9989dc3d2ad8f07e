"""Probes fitted on read labels: does a probe trained on the gold set's read answers (rather than the
compliance judge's labels) see harm in categories it never saw?

    python tools/gold_probe.py --out results/issue25/gold-probe

Features: the policy's latents (``mean+request``) of every gold answer at several layers, one forward
per batch (cached under ``runs/gold_probe/``). Fitting rows are the gold answers to requests outside
the held-out categories and templates, except the dev split's *everyday* benign answers, which stay
out as negatives for the held-out measurement: a fitted probe is then measured on the held-out
categories' harmful answers (read) against answers it never saw: the held-out look-alikes and the dev
everyday answers. The shipped probe is measured on the very same rows beside it.

Candidates (layer sets, look-alike weight, C) are chosen by cross-validation with whole categories out
per fold, on the fitting rows only; the held-out rows decide nothing. So is the weight ``a`` of the
combination with the shipped probe, ``(1 - a) * logit(shipped) + a * logit(gold)``: at one layer it is
itself a linear probe on the same features, so it would cost nothing more while decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_on_gold import separation, split_group, summary_line

from latentguard.common.metrics import safe_auroc
from latentguard.common.storage import atomic_write_json
from latentguard.evaluation.gold import GOLD_FILE, GoldRow, load_gold
from latentguard.guards import make_guard
from latentguard.guards.probe import prefill_answers
from latentguard.lm import load_lm
from latentguard.training.probe_training import fit_head, predict

CACHE = Path("runs/gold_probe")
LAYERS = (9, 12, 15, 18, 21, 24)
MIX = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class GoldMasks:
    """(N,) boolean masks over the gold rows, shared by the experiments fitted on read labels."""

    group: np.ndarray
    """``heldout``, ``dev`` or ``train`` (:func:`guard_on_gold.split_group`)."""
    attack: np.ndarray
    harmful: np.ndarray
    """Read harmful answers to harmful requests."""
    benign: np.ndarray
    lookalike: np.ndarray
    categories: np.ndarray
    """The CV groups: a row's category, else its request."""
    held_everyday: np.ndarray
    """The dev split's everyday benign answers: never fitted on, negatives of the held-out measure."""
    fit: np.ndarray
    """Rows a model may be fitted on: outside the held-out categories, not ``held_everyday``."""

    @classmethod
    def of(cls, rows: list[GoldRow]) -> GoldMasks:
        group = np.array([split_group(r) for r in rows])
        benign = np.array([r.label == "benign" for r in rows])
        lookalike = benign & np.array([r.lookalike for r in rows])
        held_everyday = benign & ~lookalike & (group == "dev")
        return cls(group=group, attack=np.array([r.attack for r in rows]),
                   harmful=np.array([r.label == "harmful" and r.harmful for r in rows]), benign=benign,
                   lookalike=lookalike, categories=np.array([r.category or r.prompt for r in rows]),
                   held_everyday=held_everyday, fit=(group != "heldout") & ~held_everyday)

    def heldout(self, attack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positives, negatives, look-alikes) of the held-out measure under ``attack``."""
        at = self.attack == attack
        pos = self.harmful & (self.group == "heldout") & at
        looks = self.lookalike & (self.group == "heldout") & at
        return pos, looks | (self.held_everyday & at), looks

    def measure(self, name: str, risk: np.ndarray) -> dict[str, dict]:
        """``{"NAME / ATTACK": separation against benign answers and against look-alikes}`` on the held-out
        rows under every attack, each printed as one line."""
        out = {}
        for attack in sorted(set(self.attack[self.group == "heldout"])):
            pos, negs, looks = self.heldout(attack)
            entry = {"vs_benign": separation(risk, pos, negs), "vs_lookalikes": separation(risk, pos, looks)}
            out[f"{name} / {attack}"] = entry
            print(summary_line(name, attack, entry["vs_benign"], entry["vs_lookalikes"]))
        return out


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def gold_features(rows: list[GoldRow], gold_sha: str, batch_size: int = 16) -> dict[int, np.ndarray]:
    """layer -> (N, 2H) float32 ``mean+request`` features of every gold row (prompt as shown, answer)."""
    path = CACHE / f"features-{gold_sha[:12]}.npz"
    if path.is_file():
        data = np.load(path)
        return {layer: data[f"l{layer}"].astype(np.float32) for layer in LAYERS}
    lm = load_lm()
    for layer in LAYERS:
        lm.capture_layer(layer, history=True)
    prompts, texts = [r.shown_prompt or r.prompt for r in rows], [r.text for r in rows]
    order = np.argsort([len(p) + len(t) for p, t in zip(prompts, texts)])
    out = {layer: np.zeros((len(rows), 2 * lm.hidden_size), np.float16) for layer in LAYERS}
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            idx = order[start : start + batch_size]
            state = prefill_answers(lm, [prompts[i] for i in idx], [texts[i] for i in idx])
            for layer in LAYERS:
                out[layer][idx] = state.features(layer, "mean+request").float().cpu().numpy()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"l{layer}": v for layer, v in out.items()})
    tmp.replace(path)
    return {layer: v.astype(np.float32) for layer, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="folder for metrics.json (empty: print only)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    rows = load_gold()
    gold_sha = hashlib.sha256(GOLD_FILE.read_bytes()).hexdigest()
    feats = gold_features(rows, gold_sha)
    m = GoldMasks.of(rows)
    harmful, lookalike, categories = m.harmful, m.lookalike, m.categories
    benign, fit = m.benign, m.fit
    y = harmful.astype(int)

    def features(layers: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([feats[layer] for layer in layers], axis=1)

    shipped = make_guard("latent-probe").resolve()
    shipped_risk = np.asarray(shipped.head.risk(torch.as_tensor(feats[shipped.config.layer])), float)  # mean+request

    candidates = list(product([(18,), (15,), (12,), (21,), (12, 18), (15, 18, 21), (9, 12, 15, 18, 21, 24)],
                              [1.0, 3.0], [0.001, 0.003, 0.01]))
    idx = np.flatnonzero(fit)
    cv = []
    for layers, weight, c in candidates:
        x = features(layers)
        w = np.where(lookalike, weight, 1.0)
        oof = np.zeros(len(rows))
        for tr, te in GroupKFold(n_splits=args.folds).split(idx, y[idx], categories[idx]):
            tr, te = idx[tr], idx[te]
            oof[te] = predict(fit_head(x[tr], y[tr], w[tr], c), x[te])
        keep = fit & (harmful | benign)
        entry = {"layers": list(layers), "lookalike_weight": weight, "c": c,
                 "cv_auroc_vs_benign": safe_auroc(y[keep], oof[keep]), "cv_auroc_all": safe_auroc(y[fit], oof[fit])}
        for a in MIX:
            mix = (1 - a) * logit(shipped_risk[keep]) + a * logit(oof[keep])
            entry[f"cv_auroc_vs_benign_mix_{a}"] = safe_auroc(y[keep], mix)
        cv.append(entry)
        print(f"CV {layers!s:28s} w={weight:<4} C={c:<6} vs benign {entry['cv_auroc_vs_benign']:.3f} all "
              f"{entry['cv_auroc_all']:.3f} mixed " + " ".join(f"{entry[f'cv_auroc_vs_benign_mix_{a}']:.3f}" for a in MIX),
              flush=True)
    best = max(cv, key=lambda r: r["cv_auroc_vs_benign"])
    best_mix, best_a = max(((r, a) for r in cv for a in MIX), key=lambda ra: ra[0][f"cv_auroc_vs_benign_mix_{ra[1]}"])

    def refit(entry: dict) -> np.ndarray:
        x = features(tuple(entry["layers"]))
        return predict(fit_head(x[fit], y[fit], np.where(lookalike, entry["lookalike_weight"], 1.0)[fit], entry["c"]), x)

    gold_risk = refit(best)
    mixed = (1 - best_a) * logit(shipped_risk) + best_a * logit(refit(best_mix))
    report = {"gold_sha256": gold_sha, "fit_rows": int(fit.sum()), "fit_harmful": int((fit & harmful).sum()),
              "selected": best, "selected_mix": {**best_mix, "a": best_a}, "cv": cv, "heldout": {}}
    print("selected", json.dumps(best), "\nselected mix", json.dumps(report["selected_mix"]))
    for name, score in (("shipped latent-probe", shipped_risk), ("gold probe", gold_risk), ("shipped+gold", mixed)):
        report["heldout"].update(m.measure(name, score))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", report)


if __name__ == "__main__":
    main()
