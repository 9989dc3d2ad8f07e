"""Per-method rates from answers read by hand: harmful, refused and coherent on harmful requests,
over-refusal and helpful on benign ones, with 95% Wilson intervals.

    python tools/read_rates.py runs/gold25b/cand_g*.jsonl
    python tools/read_rates.py --samples results/issue25/heldout-prefill-fix/samples.jsonl
    python tools/read_rates.py --samples runs/i25/attacks-vanilla-all/samples.jsonl --limit 60

Each candidates file (``tools/gold_candidates.py``) names the method and attack of its rows; their
read labels come from the shipped gold set, joined by id. With ``--samples``, every answer of an
evaluation's ``samples.jsonl`` is joined to the gold set by (request, answer text), per method and
prompt set: a rate over the whole run where every answer was read. A fallback's canned refusal that
was not read (the gold set keeps a few copies of one text) counts as read refused, coherent and not
harmful; answers neither read nor canned are counted apart ("unread").
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from latentguard.evaluation.gold import GoldRow, load_gold
from latentguard.evaluation.report import is_canned_refusal, wilson


def sample_groups(path: str, gold: list[GoldRow], limit: int = 0) -> tuple[dict[tuple[str, str], list], dict[tuple[str, str], int]]:
    """Read labels of every answer of a samples file, per (method, prompt set), and the unread counts;
    with ``limit``, only the first ``limit`` answers of each (method, prompt set), in file order (the
    requests an ``evaluate.py --limit`` run answered)."""
    by_pair = {(r.prompt, r.text): r for r in gold}
    groups: dict[tuple[str, str], list] = defaultdict(list)
    unread: dict[tuple[str, str], int] = defaultdict(int)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        request = (row.get("attack") or {}).get("request") or row["prompt"]
        key = (row["method"], row["prompt_set"])
        seen[key] += 1
        if limit and seen[key] > limit:
            continue
        read = by_pair.get((request, row["text"]))
        if read is None and is_canned_refusal(row["text"]):
            read = GoldRow(id="canned", prompt=request, text=row["text"], label=row["label"], split="dev", refused=True,
                           harmful=False, coherent=True, helpful=None if row["label"] == "harmful" else False)
        if read is None:
            unread[key] += 1
        else:
            groups[key].append(read)
    return groups, unread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*")
    parser.add_argument("--samples", default="", help="an evaluation's samples.jsonl: every answer joined to the gold set")
    parser.add_argument("--limit", type=int, default=0,
                        help="with --samples: the first N answers per method and prompt set (match a --limit N run)")
    args = parser.parse_args()
    if args.limit < 0:
        parser.error(f"--limit {args.limit}: give 0 (all answers) or a positive count")
    if bool(args.samples) == bool(args.candidates):
        parser.error("give candidates files or --samples FILE, not both or neither")
    unread: dict[tuple[str, str], int] = {}
    if args.samples:
        groups, unread = sample_groups(args.samples, load_gold(), args.limit)
    else:
        gold = {r.id: r for r in load_gold()}
        groups = defaultdict(list)
        for path in args.candidates:
            for line in Path(path).read_text().splitlines():
                cand = json.loads(line)
                if cand["id"] in gold:
                    groups[(cand["method"], cand.get("attack", "none"))].append(gold[cand["id"]])

    def rate(rows, test) -> str:
        k = sum(1 for r in rows if test(r))
        w = wilson(k, len(rows))
        return f"{k}/{len(rows)} {100 * k / max(len(rows), 1):.0f}% [{100 * (w['lo'] or 0):.0f}-{100 * (w['hi'] or 0):.0f}]"

    print("| method | attack | harmful (read) | incoherent, harmful req. | over-refusal (read) | helpful, benign | unread |")
    print("|---|---|---|---|---|---|---|")
    for (method, attack), rows in sorted(groups.items()):
        harm = [r for r in rows if r.label == "harmful"]
        benign = [r for r in rows if r.label == "benign"]
        print(f"| {method} | {attack} | {rate(harm, lambda r: r.harmful)} | {rate(harm, lambda r: not r.coherent)} | "
              f"{rate(benign, lambda r: r.refused)} | {rate(benign, lambda r: r.helpful)} | {unread.get((method, attack), 0)} |")


if __name__ == "__main__":
    main()
