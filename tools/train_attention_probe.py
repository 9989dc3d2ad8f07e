"""Train and compare attention-pooled and mean probes by category-grouped CV (issue 25, item 2).

    python tools/train_attention_probe.py --out runs/attn

Uses the guard's training answers (the cached shards of ``train.py guard --layers 12,18``; by default a
subset: one answer to each of up to 150 train requests per set and label, up to 40 dev requests per set
and label, every held-out request), labelled by the compliance judge as the shipped probe was; reads each answer's per-token states at the candidate
layers; scores every candidate by CV with whole categories held out per fold; refits the best of each
pooling on all train answers; reports dev and held-out figures (held-out unsafe answers against the
dev split's everyday answers and against the held-out look-alikes) and saves both probes under
``--out`` (``latent-probe:FOLDER`` loads one) with ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from latentguard.common.metrics import safe_auroc, tpr_at_fpr
from latentguard.common.storage import atomic_write_json
from latentguard.data.prompt_sets import LABELLED_SETS
from latentguard.evaluation.judges import guard_labeler
from latentguard.guards.probe import LatentProbe, ModelProbe
from latentguard.lm import load_lm
from latentguard.training.attention_probe import (
    POOLINGS,
    Rows,
    TokenLatents,
    fit,
    grouped_cv,
    predict_rows,
    to_probe,
    token_latents,
    vs_benign,
)
from latentguard.training.guard_training import GuardTrainConfig, relabel, split_answers
from latentguard.training.probe_training import Features, choose_threshold


def cached_latents(path: Path, make) -> TokenLatents:
    if path.is_file():
        with np.load(path) as d:
            layers = sorted({int(k.split(":")[1]) for k in d.files if k.startswith("hidden:")})
            return TokenLatents({k: d[f"hidden:{k}"] for k in layers}, {k: d[f"request:{k}"] for k in layers},
                                d["lengths"])
    latents = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, lengths=latents.lengths, **{f"hidden:{k}": v for k, v in latents.hidden.items()},
             **{f"request:{k}": v for k, v in latents.request.items()})
    return latents


def build_rows(answers, records, lookalike_weight: float) -> Rows:
    n, p = len(answers), len(answers.prefixes)
    rec = [records[q] for q in answers.prompts]
    group = np.array([r.harm_category or r.category or r.prompt for r in rec])
    weight = np.where(answers.lookalike & ~answers.harmful_request, lookalike_weight, 1.0)
    return Rows(np.repeat(np.arange(n), p), np.tile(np.array(answers.prefixes), n), np.repeat(answers.labels, p),
                np.repeat(weight, p), np.repeat(group, p), np.repeat(answers.harmful_request, p),
                np.repeat(answers.lookalike, p))


def heldout_figures(risk_held: np.ndarray, held: Rows, risk_dev: np.ndarray, dev: Rows, threshold: float) -> dict:
    """Held-out unsafe rows against the dev split's everyday rows and against the held-out look-alikes."""
    out = {}
    unsafe = risk_held[held.y == 1]
    for name, negatives in (("everyday", risk_dev[~dev.harmful_request & ~dev.lookalike]),
                            ("lookalikes", risk_held[~held.harmful_request])):
        risk = np.r_[unsafe, negatives]
        positive = np.r_[np.ones(len(unsafe), bool), np.zeros(len(negatives), bool)]
        out[name] = {"auroc": safe_auroc(positive, risk), "tpr_at_fpr_05": tpr_at_fpr(risk, positive, 0.05)[0],
                     "tpr_at_threshold": float((unsafe >= threshold).mean()),
                     "fpr_at_threshold": float((negatives >= threshold).mean()), "unsafe": len(unsafe),
                     "negatives": len(negatives)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/attn")
    parser.add_argument("--layers", default="12,18", help="layers of the reader the probes may read")
    parser.add_argument("--answer-layers", default="12,18",
                        help="layers the cached guard answers were collected with (part of their cache key)")
    parser.add_argument("--cs", default="0.003,0.01")
    parser.add_argument("--lookalike-weight", type=float, default=10.0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reader", default="", help="read the answers with this model instead of the policy "
                        "(a second-stage probe, saved for model-probe:FOLDER)")
    parser.add_argument("--poolings", default=",".join(POOLINGS))
    parser.add_argument("--samples", type=int, default=1, help="answers per train request")
    parser.add_argument("--train-limit", type=int, default=150, help="train requests per set and label (0 = all)")
    parser.add_argument("--dev-limit", type=int, default=40, help="dev requests per set and label (0 = all)")
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    layers = [int(x) for x in args.layers.split(",")]
    lm = load_lm("smollm2-135m-instruct")
    reader = load_lm(args.reader) if args.reader else lm
    poolings = args.poolings.split(",")
    config = GuardTrainConfig(layers=args.answer_layers, labels="compliance")  # names the cached answer shards
    labeler = guard_labeler("compliance")
    records = {r.prompt: r for load in LABELLED_SETS.values() for r in load()}
    data = {}
    limits = {"train": args.train_limit, "dev": args.dev_limit, "heldout": 0}
    for split, samples in (("train", args.samples), ("dev", 1), ("heldout", 1)):
        answers, folder = split_answers(lm, replace(config, limit=limits[split]), split, samples, progress=True)
        relabel(answers, labeler, folder)
        latents = cached_latents(out / f"latents-{split}.npz", lambda a=answers: token_latents(
            reader, a.prompts, [t[-1] for t in a.texts], layers, max_tokens=max(a.prefixes)))
        data[split] = (answers, latents, build_rows(answers, records, args.lookalike_weight))
        print(f"{split}: {len(answers)} answers, {int(answers.labels.sum())} unsafe ({time.perf_counter() - start:.0f} s)")
    _, lat_train, rows_train = data["train"]
    table = []
    for pooling in poolings:
        for layer in layers:
            for c in (float(x) for x in args.cs.split(",")):
                oof = grouped_cv(pooling, lat_train, layer, rows_train, c, args.folds)
                table.append({"pooling": pooling, "layer": layer, "c": c, **vs_benign(oof, rows_train), "_oof": oof})
                print({k: v for k, v in table[-1].items() if k != "_oof"}, f"({time.perf_counter() - start:.0f} s)")
    report: dict = {"cv": [{k: v for k, v in row.items() if k != "_oof"} for row in table], "probes": {}}
    for pooling in poolings:
        best = max((row for row in table if row["pooling"] == pooling), key=lambda row: row["auroc_vs_benign"])
        f = Features(np.zeros((len(rows_train.y), 1)), rows_train.y, rows_train.group, rows_train.prefix,
                     rows_train.harmful_request, rows_train.lookalike)
        threshold = choose_threshold(f, best["_oof"], max_lookalike_fpr=0.15)
        model = fit(pooling, lat_train, best["layer"], rows_train, best["c"])
        risks = {split: predict_rows(model, lat, best["layer"], rows) for split, (_, lat, rows) in data.items()}
        figures = {"selection": {k: best[k] for k in ("layer", "c", "auroc_vs_benign", "tpr_at_fpr_05")},
                   "threshold": threshold, "dev": vs_benign(risks["dev"], data["dev"][2]),
                   "heldout": heldout_figures(risks["heldout"], data["heldout"][2], risks["dev"], data["dev"][2],
                                              threshold)}
        info = {"labels": "compliance", "cv": "category-grouped", **figures["selection"]}
        cls = ModelProbe if args.reader else LatentProbe
        to_probe(model, pooling, reader, best["layer"], threshold, info, cls).save(out / f"probe-{pooling.replace('+', '-')}")
        report["probes"][pooling] = figures
        print(pooling, json.dumps(figures, indent=1))
    report["seconds"] = time.perf_counter() - start
    atomic_write_json(out / "metrics.json", report)


if __name__ == "__main__":
    main()
