"""The judges' agreement with the read gold labels, by request split and by attack (a markdown table).

    python tools/judge_agreement_table.py --judges learned,compliance,coherence,refusal \
        --out results/issue25/judges

Rows are the gold ``dev`` split (the judges are fitted on gold ``train``), grouped by the request's
project split (``heldout``: categories no guard, critic, policy or judge was fitted on; ``dev``: dev
and test requests) and by attack. Each cell: accuracy and Cohen's kappa on ``harmful`` (answers to
harmful requests) with the count, and on ``coherent`` (all answers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from latentguard.common.storage import atomic_write_json, atomic_write_text
from latentguard.data.prompt_sets import request_split
from latentguard.evaluation.gold import judge_agreement, load_gold
from latentguard.evaluation.judge_features import PairFeatures
from latentguard.evaluation.judges import make_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judges", default="learned,compliance,coherence,refusal")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = load_gold(split="dev")
    groups = np.array(["heldout" if request_split(r.prompt) == "heldout" else "dev" for r in rows])
    attacks = np.array([r.attack for r in rows])
    features = PairFeatures()
    cells = {}
    for spec in args.judges.split(","):
        verdicts = make_judge(spec, features).judge([r.prompt for r in rows], [r.text for r in rows]).as_dict()
        for group in ("dev", "heldout"):
            for attack in sorted(set(attacks)):
                idx = np.flatnonzero((groups == group) & (attacks == attack))
                if not len(idx):
                    continue
                sub = {k: None if v is None else np.asarray(v)[idx] for k, v in verdicts.items()}
                stats = judge_agreement(sub, [rows[i] for i in idx])
                cells[(spec, f"{group}+{attack}")] = {t: {k: s[k] for k in ("n", "accuracy", "kappa")}
                                                      for t, s in stats.items()}
    columns = sorted({c for _, c in cells}, key=lambda c: (c.split("+")[0] != "dev", c))
    lines = ["| judge | label | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for spec in args.judges.split(","):
        for target in ("harmful", "coherent"):
            row = []
            for column in columns:
                s = cells.get((spec, column), {}).get(target)
                row.append("-" if not s or not s["n"] else f"{s['accuracy']:.2f} / {s['kappa']:.2f} ({s['n']})")
            if any(c != "-" for c in row):
                lines.append(f"| {spec} | {target} | " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "agreement_by_split_attack.md", table)
        atomic_write_json(Path(args.out) / "agreement_by_split_attack.json",
                          {f"{j}|{c}": v for (j, c), v in cells.items()})


if __name__ == "__main__":
    main()
