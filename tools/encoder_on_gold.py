"""A fine-tuned text encoder as a second opinion beside the latent probe (issue 25, item 3): does
all-MiniLM-L6-v2, fine-tuned as a cross-encoder over (request, answer) on the read gold answers, see
harm in categories it never saw, alone, averaged with the shipped probe, or in a cascade?

    python tools/encoder_on_gold.py --out results/issue25/encoder-cascade

Rows are those of ``tools/gold_probe.py``: fitting rows are gold answers to requests outside the
held-out categories, except the dev split's everyday benign answers (the held-out measure's
negatives) and template-attacked answers (the templates a held-out measure uses); held out are the
held-out categories' harmful answers (read) against the held-out look-alikes and the dev everyday
answers, none of which any model here was fitted on. The shipped probe is measured on the same rows.

The encoder is fine-tuned ``--folds`` times, each time with one group of whole categories out. The
out-of-fold risks choose the weight ``a`` of ``(1 - a) * logit(probe) + a * logit(encoder)`` and the
cascade's band (at most ``--max-asked`` of the fitting rows asked); the held-out rows decide nothing.
On held-out rows the encoder's risk is the mean of the fold models' risks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gold_probe import GoldMasks, gold_features, logit

from latentguard.common.metrics import safe_auroc, tpr_at_fpr
from latentguard.common.storage import atomic_write_json
from latentguard.evaluation.gold import GOLD_FILE, load_gold
from latentguard.guards import make_guard
from latentguard.guards.cascade import calibrate_band, cascade_risk
from latentguard.text.embeddings import minilm_path

CACHE = Path("runs/encoder_on_gold")
MIX = (0.25, 0.5, 0.75)


class CrossEncoder(torch.nn.Module):
    """MiniLM over ``[CLS] request [SEP] answer [SEP]``, mean-pooled, one logit."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel

        self.body = AutoModel.from_pretrained(minilm_path())
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)

    def forward(self, enc: dict) -> torch.Tensor:
        hidden = self.body(**enc).last_hidden_state  # (B, L, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, 384)
        return self.head(pooled).squeeze(-1)  # (B,)


def batches(lengths: np.ndarray, idx: np.ndarray, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of rows of like lengths (little padding), in random order when ``rng`` is given."""
    order = idx[np.argsort(lengths[idx], kind="stable")]
    out = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def fine_tune(tok, pairs: list[tuple[str, str]], y: np.ndarray, w: np.ndarray, train: np.ndarray,
              score: np.ndarray, *, epochs: int, lr: float, batch_size: int, max_length: int,
              seed: int) -> np.ndarray:
    """Fine-tune a fresh encoder on rows ``train``; (len(score),) risks of rows ``score``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CrossEncoder()
    lengths = np.array([len(a) + len(b) for a, b in pairs])
    pos = (y[train] * w[train]).sum()
    neg = ((1 - y[train]) * w[train]).sum()
    balance = np.where(y == 1, 0.5 * (pos + neg) / pos, 0.5 * (pos + neg) / neg) * w  # class-balanced weights

    def encode(rows: np.ndarray) -> dict:
        return tok([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], padding=True, truncation="only_second",
                   max_length=max_length, return_tensors="pt")

    steps = epochs * len(batches(lengths, train, batch_size, None))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
    model.train()
    step, start = 0, time.time()
    for _ in range(epochs):
        for rows in batches(lengths, train, batch_size, rng):
            logits = model(encode(rows))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.as_tensor(y[rows], dtype=torch.float32), weight=torch.as_tensor(balance[rows], dtype=torch.float32))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 25 == 0:
                print(f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()
    out = np.empty(len(score))
    with torch.inference_mode():
        for rows in batches(lengths, score, 64, None):
            out[np.searchsorted(score, rows)] = torch.sigmoid(model(encode(rows))).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="folder for metrics.json (empty: print only)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lookalike-weight", type=float, default=3.0)
    parser.add_argument("--max-asked", type=float, default=0.3, help="cascade: most share of fitting rows asked")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    rows = load_gold()
    gold_sha = hashlib.sha256(GOLD_FILE.read_bytes()).hexdigest()
    m = GoldMasks.of(rows)
    attack, harmful, benign, lookalike, categories = m.attack, m.harmful, m.benign, m.lookalike, m.categories
    fit = m.fit & (attack != "template")  # the templates' text is what a held-out template measure tests
    held = m.group == "heldout"
    y = harmful.astype(int)
    w = np.where(lookalike, args.lookalike_weight, 1.0)
    pairs = [(r.shown_prompt or r.prompt, r.text) for r in rows]

    feats = gold_features(rows, gold_sha)
    probe = make_guard("latent-probe").resolve()
    probe_risk = np.asarray(probe.head.risk(torch.as_tensor(feats[probe.config.layer])), float)  # (N,)

    tok = AutoTokenizer.from_pretrained(minilm_path())
    # the rows any fold model scores: its own out-of-fold rows and every row no model is fitted on
    unseen = np.flatnonzero(~fit)
    idx = np.flatnonzero(fit)
    oof = np.full(len(rows), np.nan)
    unseen_risk = np.zeros(len(rows))
    CACHE.mkdir(parents=True, exist_ok=True)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=args.folds).split(idx, y[idx], categories[idx])):
        tr, te = idx[tr], idx[te]
        key = (f"{gold_sha[:12]}-f{k}of{args.folds}-e{args.epochs}-lr{args.lr:g}-b{args.batch_size}-"
               f"L{args.max_length}-w{args.lookalike_weight:g}")
        path = CACHE / f"{key}.npz"
        score = np.sort(np.concatenate([te, unseen]))
        if path.is_file():
            risk = np.load(path)["risk"]
        else:
            print(f"fold {k}: fitting on {len(tr)} rows ({int(y[tr].sum())} harmful)", flush=True)
            risk = fine_tune(tok, pairs, y, w, tr, score, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, max_length=args.max_length, seed=k)
            np.savez(path, risk=risk, rows=score)
        full = np.zeros(len(rows))
        full[score] = risk
        oof[te] = full[te]
        unseen_risk[unseen] += full[unseen] / args.folds
    encoder_risk = np.where(fit, oof, unseen_risk)

    keep = fit & (harmful | benign)
    cv = {"encoder": safe_auroc(y[keep], oof[keep]), "probe": safe_auroc(y[keep], probe_risk[keep])}
    for a in MIX:
        cv[f"mix_{a}"] = safe_auroc(y[keep], (1 - a) * logit(probe_risk[keep]) + a * logit(oof[keep]))
    best_a = max(MIX, key=lambda a: cv[f"mix_{a}"])
    # the encoder's threshold: TPR at FPR 5% on the fitting rows, out of fold
    enc_threshold = tpr_at_fpr(oof[keep], y[keep].astype(bool), 0.05)[1]
    band = calibrate_band(probe_risk[keep], oof[keep], y[keep].astype(bool), probe.threshold, enc_threshold,
                          max_asked=args.max_asked)
    low, high = band["low"], band["high"]
    print("CV (fitting rows, categories out):", json.dumps(cv), "a =", best_a, "band", (low, high), flush=True)

    mixed = (1 - best_a) * logit(probe_risk) + best_a * logit(encoder_risk)
    casc = cascade_risk(probe_risk, encoder_risk, probe.threshold, enc_threshold, low, high)
    report = {"gold_sha256": gold_sha, "args": vars(args), "fit_rows": int(fit.sum()),
              "fit_harmful": int((fit & harmful).sum()), "cv": cv, "a": best_a,
              "band": band, "encoder_threshold": enc_threshold, "heldout": {}}
    for name, score in (("shipped latent-probe", probe_risk), ("encoder", encoder_risk),
                        (f"probe+encoder a={best_a}", mixed), ("cascade", casc)):
        report["heldout"].update(m.measure(name, score))
    inside = (probe_risk >= low) & (probe_risk < high)
    for a in sorted(set(attack[held])):
        pos, negs, _ = m.heldout(a)
        report["heldout"][f"cascade / {a}"]["asked_share"] = float(inside[pos | negs].mean())
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", report)


if __name__ == "__main__":
    main()
