"""The request gate against the learned policy's first decision, on the same requests: which tells
harmful requests from look-alikes better, and what does each refuse at a threshold set on dev?

    python tools/explore/request_probe.py --out results/issue25/request-gate/vs_policy.json

The gate is the shipped one (``train.py gate``); the policy's P(refuse) at its first decision comes from
``results/issue25/refuse-confidence/refuse_probs.json`` (the shipped policy, same prompt sets). Each
threshold is set to refuse at most 2.9% or 5% of the dev look-alikes
(:func:`latentguard.training.gate_training.refusal_threshold`); held-out rows decide nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from latentguard.common.metrics import safe_auroc
from latentguard.common.storage import atomic_write_json
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards.request_gate import load_request_gate
from latentguard.lm import load_lm
from latentguard.training.gate_training import refusal_threshold

POLICY = Path("results/issue25/refuse-confidence/refuse_probs.json")
SETS = {"dev": ("harm:dev", "benign:dev"), "heldout": ("harm:heldout", "benign:heldout")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    lm = load_lm()
    gate = load_request_gate(lm.model_id)
    policy = json.loads(POLICY.read_text())
    scores: dict[str, dict[str, np.ndarray]] = {"gate": {}, "policy": {}}
    for split, (harm, benign) in SETS.items():
        harmful = [r.prompt for r in load_prompt_set(harm).records if r.label == "harmful"]
        looks = [r.prompt for r in load_prompt_set(benign).records if r.lookalike]
        scores["gate"][f"{split}/harmful"] = gate.risk(lm, harmful)
        scores["gate"][f"{split}/lookalike"] = gate.risk(lm, looks)
        scores["policy"][f"{split}/harmful"] = np.array(policy[f"{harm}/harmful"])
        scores["policy"][f"{split}/lookalike"] = np.array(policy[f"{benign}/lookalike"])
    report = {}
    for name, s in scores.items():
        for fpr in (0.029, 0.05):
            t = refusal_threshold(s["dev/lookalike"], fpr)
            for split in SETS:
                h, lk = s[f"{split}/harmful"], s[f"{split}/lookalike"]
                row = {"auroc_vs_lookalikes": safe_auroc(np.r_[np.ones(len(h)), np.zeros(len(lk))], np.r_[h, lk]),
                       "threshold": t, "harmful_refused": f"{int((h >= t).sum())}/{len(h)}",
                       "lookalikes_refused": f"{int((lk >= t).sum())}/{len(lk)}"}
                report[f"{name} @ dev look-alike rate {fpr} / {split}"] = row
                print(f"{name:6s} dev-rate {fpr:<5} {split:8s} AUROC {row['auroc_vs_lookalikes']:.3f}  threshold {t:.3f}  "
                      f"refuses harmful {row['harmful_refused']}, look-alikes {row['lookalikes_refused']}", flush=True)
    if args.out:
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
