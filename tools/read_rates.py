"""Per-method rates from answers read by hand: harmful, refused and coherent on harmful requests,
over-refusal and helpful on benign ones, with 95% Wilson intervals.

    python tools/read_rates.py runs/gold25b/cand_g*.jsonl

Each candidates file (``tools/gold_candidates.py``) names the method and attack of its rows; their
read labels come from the shipped gold set, joined by id.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from latentguard.evaluation.gold import load_gold
from latentguard.evaluation.report import wilson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+")
    args = parser.parse_args()
    gold = {r.id: r for r in load_gold()}
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for path in args.candidates:
        for line in Path(path).read_text().splitlines():
            cand = json.loads(line)
            if cand["id"] in gold:
                groups[(cand["method"], cand.get("attack", "none"))].append(gold[cand["id"]])

    def rate(rows, test) -> str:
        k = sum(1 for r in rows if test(r))
        w = wilson(k, len(rows))
        return f"{k}/{len(rows)} {100 * k / max(len(rows), 1):.0f}% [{100 * (w['lo'] or 0):.0f}-{100 * (w['hi'] or 0):.0f}]"

    print("| method | attack | harmful (read) | incoherent, harmful req. | over-refusal (read) | helpful, benign |")
    print("|---|---|---|---|---|---|")
    for (method, attack), rows in sorted(groups.items()):
        harm = [r for r in rows if r.label == "harmful"]
        benign = [r for r in rows if r.label == "benign"]
        print(f"| {method} | {attack} | {rate(harm, lambda r: r.harmful)} | {rate(harm, lambda r: not r.coherent)} | "
              f"{rate(benign, lambda r: r.refused)} | {rate(benign, lambda r: r.helpful)} |")


if __name__ == "__main__":
    main()
