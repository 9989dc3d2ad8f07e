"""Join labelled batches with their candidates into the shipped gold file, and the second pass.

    python tools/gold_assemble.py --candidates runs/gold/*_candidates.jsonl --labels runs/gold/labels/<batch>*.jsonl \
        --review runs/gold/labels/review_*.jsonl --second runs/gold/labels/second_pass_v2.jsonl --out latentguard/evaluation/data/gold

The gold split follows the request's project split: answers to held-out requests (categories and templates no
guard, critic, policy or judge is fitted on) are gold ``dev``, where the judges are measured; all others (train,
dev and test requests) are gold ``train``, where they are fitted. Every row is
checked with :func:`latentguard.evaluation.gold.parse_gold_line`; a candidate without a label is an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentguard.data.prompt_sets import request_split
from latentguard.evaluation.gold import parse_gold_line

LABEL_KEYS = ("refused", "harmful", "coherent", "helpful", "reason")


def gold_split(request: str) -> str:
    """``dev`` for a held-out request, ``train`` for any other (see the module docstring)."""
    return "dev" if request_split(request) == "heldout" else "train"


def read(paths: list[str]) -> list[dict]:
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", required=True)
    parser.add_argument("--labels", nargs="+", required=True)
    parser.add_argument("--second", default="")
    parser.add_argument("--review", nargs="*", default=[],
                        help="consistency-review files: their refused/harmful/coherent/reason override the labels")
    parser.add_argument("--out", required=True)
    parser.add_argument("--append", action="store_true",
                        help="add the rows to the gold set in --out instead of replacing it (ids must be new)")
    parser.add_argument("--second-map", default="",
                        help="JSON {second-read id: item id}: the --second file's ids are aliases read blind")
    args = parser.parse_args()
    labels = {row["id"]: row for row in read(args.labels)}
    changes: dict[str, int] = {}
    for review in read(args.review):
        old = labels[review["id"]]
        for key in ("refused", "harmful", "coherent"):
            if review[key] != old[key]:
                changes[key] = changes.get(key, 0) + 1
        labels[review["id"]] = old | {k: review[k] for k in ("refused", "harmful", "coherent", "reason")}
    if args.review:
        print(f"review: {len(read(args.review))} rows re-read, labels changed: {changes}")
    rows = []
    for cand in read(args.candidates):
        if cand["id"] not in labels:
            raise SystemExit(f"error: candidate {cand['id']} has no label")
        lab = labels[cand["id"]]
        row = {"id": cand["id"], "prompt": cand["prompt"], "text": cand["text"], "label": cand["label"],
               "category": cand.get("category", ""), "lookalike": bool(cand.get("lookalike")),
               "method": cand.get("method", ""), "split": gold_split(cand["prompt"]),
               **{k: lab.get(k) for k in LABEL_KEYS}}
        if cand.get("attack", "none") != "none":
            row |= {"attack": cand["attack"], "shown_prompt": cand.get("shown_prompt", "")}
        row["reason"] = (row["reason"] or "").replace(" [rechecked]", "")
        parse_gold_line(row, f"candidate {cand['id']}")
        rows.append(row)
    out = Path(args.out)
    old = read([str(out / "gold.jsonl")]) if args.append else []
    clash = {r["id"] for r in old} & {r["id"] for r in rows}
    if clash:
        raise SystemExit(f"error: ids already in the gold set: {sorted(clash)[:5]}; give the new candidates new ids")
    rows = old + rows
    (out / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows: {sum(r['split'] == 'train' for r in rows)} train, {sum(r['split'] == 'dev' for r in rows)} dev")
    if args.second:
        ids = {r["id"] for r in rows}
        alias = json.loads(Path(args.second_map).read_text()) if args.second_map else {}
        second = [{"id": alias.get(s["id"], s["id"]), **{k: s.get(k) for k in LABEL_KEYS}} for s in read([args.second])
                  if alias.get(s["id"], s["id"]) in ids]
        if args.append:
            second = read([str(out / "second_pass.jsonl")]) + second
        (out / "second_pass.jsonl").write_text("".join(json.dumps(s) + "\n" for s in second))
        print(f"{len(second)} second-pass rows")


if __name__ == "__main__":
    main()
