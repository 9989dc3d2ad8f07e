"""Does the request gate, stacked on the shipped probe, make a guard that sees held-out harm?

    python tools/explore/guard_with_gate.py [--out results/issue25/guard-with-gate]

The shipped probe scores an answer from its latents (``mean+request`` of layer 18); the request gate
(:mod:`latentguard.guards.request_gate`) scores the request alone from its last token's latent at the
same layer, trained supervised on the labelled requests. Each answer of the read gold set gets both
risks (the probe's from ``tools/guard_on_gold.py``'s cache where it holds the row, scored here where
not); a two-feature logistic stack ``[logit probe, logit gate]`` is fitted on the gold rows of the
``dev`` group (answers to dev and test requests: neither the gate's nor the probe's fitting rows)
and measured, as ``tools/guard_on_gold.py`` measures a guard, on the ``heldout`` group (categories and
templates nothing here was fitted on), per attack. Two stacks: negatives every answer that is not
harmful (refusals and harmless answers to harmful requests too: a guard that must not flag them), and
negatives the benign requests' answers only (what the issue's figures count).

Also printed: how often each stack, at the threshold that flags at most 5% of the dev group's benign
answers, flags the held-out answers to harmful requests that readers found NOT harmful (refusals,
harmless or incoherent answers), the cost the figures against benign answers do not show.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gold_probe import logit
from guard_on_gold import CACHE, measure, split_group, summary_line

from latentguard.common.storage import atomic_write_json
from latentguard.evaluation.gold import GOLD_FILE, load_gold
from latentguard.guards import make_guard
from latentguard.guards.request_gate import load_request_gate
from latentguard.lm import load_lm

OLD_GOLD = "2496254"
"""The commit whose gold file the probe's cache under ``runs/guard_on_gold/`` was scored on."""


def probe_risks(rows, lm) -> np.ndarray:
    """(N,) the shipped probe's risk of every gold row: the cache's where it holds the row's id."""
    old_text = subprocess.run(["git", "show", f"{OLD_GOLD}:{GOLD_FILE.relative_to(Path.cwd())}"], capture_output=True,
                              text=True, check=True).stdout
    sha = hashlib.sha256(old_text.encode()).hexdigest()
    cached = json.loads((CACHE / f"latent-probe-{sha[:12]}.json").read_text())["risk"]
    old_ids = [json.loads(line)["id"] for line in old_text.splitlines() if line.strip()]
    by_id = dict(zip(old_ids, cached))
    risk = np.array([by_id.get(r.id, np.nan) for r in rows])
    todo = np.flatnonzero(np.isnan(risk))
    if todo.size:
        guard = make_guard("latent-probe")
        guard.attach(lm)
        risk[todo] = guard.score([rows[i].shown_prompt or rows[i].prompt for i in todo], [rows[i].text for i in todo])
    print(f"probe: {len(rows) - todo.size} rows from the cache, {todo.size} scored", flush=True)
    return risk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = load_gold()
    lm = load_lm()
    probe = probe_risks(rows, lm)
    gate = load_request_gate(lm.model_id)
    shown = sorted({r.shown_prompt or r.prompt for r in rows})
    gate_of = dict(zip(shown, gate.risk(lm, shown)))
    request_risk = np.array([gate_of[r.shown_prompt or r.prompt] for r in rows])
    groups = np.array([split_group(r) for r in rows])
    harmful = np.array([r.label == "harmful" and r.harmful for r in rows])
    benign = np.array([r.label == "benign" for r in rows])
    plain = np.array([r.attack == "none" for r in rows])
    x = np.stack([logit(probe), logit(request_risk)], axis=1)  # (N, 2)
    fit_rows = groups == "dev"
    report: dict = {"rows": {g: int((groups == g).sum()) for g in ("heldout", "dev", "train")}, "guards": {}}
    candidates = {"latent-probe": (probe, make_guard("latent-probe").threshold), "request-gate": (request_risk, gate.threshold)}
    for name, negatives in (("stack(all answers)", ~harmful), ("stack(benign requests)", benign)):
        keep = fit_rows & (harmful | negatives)
        model = LogisticRegression(C=1.0).fit(x[keep], harmful[keep])
        risk = model.predict_proba(x)[:, 1]
        calib = np.sort(risk[fit_rows & benign & plain])
        threshold = float(calib[int(np.ceil(0.95 * len(calib))) - 1])  # flags at most 5% of dev benign answers
        candidates[name] = (risk, threshold)
        report["guards"][name] = {"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
    for name, (risk, threshold) in candidates.items():
        entry = report["guards"].setdefault(name, {})
        entry["threshold"] = threshold
        entry["metrics"] = measure(risk, threshold, rows, groups)
        held_harmless = (groups == "heldout") & plain & (np.array([r.label == "harmful" for r in rows])) & ~harmful
        entry["flags_harmless_answers_to_heldout_harmful_requests"] = float((risk[held_harmless] >= threshold).mean())
        for key, m in entry["metrics"].items():
            if m["vs_benign"]["positives"]:
                print(summary_line(name, key, m["vs_benign"], m["vs_lookalikes"]))
        print(f"{name}: threshold {threshold:.4f}, flags {entry['flags_harmless_answers_to_heldout_harmful_requests']:.2f} "
              f"of {int(held_harmless.sum())} harmless answers to held-out harmful requests", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", report)


if __name__ == "__main__":
    main()
