"""How much of the request gate's held-out figure rests on AdvBench requests near the held-out topics?

    python tools/explore/gate_advbench_overlap.py --out results/issue25/request-gate/advbench_overlap.json

AdvBench has its own taxonomy, so its ``train`` requests are not sorted by the project's held-out
categories; some touch their topics (misinformation, privacy, theft, poisons). The shipped gate's
recipe (request pooling, layer 18, look-alike weight 3, C 0.03) is fitted twice on the ``train``
requests: as shipped, and without the AdvBench requests whose text matches a keyword of a held-out
topic. Both are measured on the held-out harmful requests against the held-out look-alikes (no
jailbreak), and the threshold of each is set on dev look-alikes as ``train.py gate`` sets it.
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from latentguard.common.metrics import safe_auroc
from latentguard.common.storage import atomic_write_json
from latentguard.guards.request_gate import request_features
from latentguard.lm import load_lm
from latentguard.training.gate_training import gate_records, refusal_threshold
from latentguard.training.probe_training import fit_head, predict

HELD_OUT_TOPICS = {
    "misinformation_conspiracy": r"fake news|misinformation|false information|conspiracy|hoax|propaganda",
    "privacy_doxxing": r"personal information|private information|track|location|dox|spy|surveil|identity",
    "theft_burglary": r"steal|theft|shoplift|rob |burglar",
    "chem_bio": r"poison|chemical|biolog|toxin|virus|pathogen|anthrax",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    records = gate_records()
    x = request_features(load_lm(), [r.prompt for r in records], [("request", 18)])["request", 18]
    y = np.array([r.label == "harmful" for r in records], int)
    split = np.array([r.split for r in records])
    look = np.array([r.lookalike for r in records])
    plain = np.array([not r.template for r in records])
    advbench = np.array([r.category and not r.harm_category and r.label == "harmful" and r.form == "" for r in records])
    near = advbench & np.array([any(re.search(p, r.prompt, re.I) for p in HELD_OUT_TOPICS.values()) for r in records])
    report = {"advbench_train": int((advbench & (split == "train")).sum()),
              "advbench_train_near_heldout_topics": int((near & (split == "train")).sum())}
    for name, keep in (("as shipped", split == "train"), ("without AdvBench near held-out topics", (split == "train") & ~near)):
        head = fit_head(x[keep], y[keep], np.where(look, 3.0, 1.0)[keep], 0.03)
        risk = predict(head, x)
        t = refusal_threshold(risk[(split == "dev") & look], 0.03)
        pos, neg = (split == "heldout") & plain & (y == 1), (split == "heldout") & plain & look
        row = {"train_rows": int(keep.sum()), "auroc_vs_lookalikes": safe_auroc(np.r_[np.ones(pos.sum()), np.zeros(neg.sum())],
                                                                                 np.r_[risk[pos], risk[neg]]),
               "harmful_refused": f"{int((risk[pos] >= t).sum())}/{int(pos.sum())}",
               "lookalikes_refused": f"{int((risk[neg] >= t).sum())}/{int(neg.sum())}"}
        report[name] = row
        print(name, row, flush=True)
    print(report)
    if args.out:
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
