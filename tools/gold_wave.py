"""A reading wave: every answer of an evaluation that the gold set has not read, as blind items for readers.

    python tools/gold_wave.py results/X/samples.jsonl --methods learned-care:rewrite=refuse \
        --prefix gm --alias-prefix gn --readers 2 --out runs/goldNN

Writes, in ``--out``: ``candidates.jsonl`` (the rows :mod:`tools.gold_assemble` joins with the labels:
request, answer, method, attack, request label), ``items_<k>.jsonl`` for reader k (id, the request's
kind, harmful or benign, the request, the prompt the model saw if an attack changed it, the answer: no
method, guard or judge), ``second_items.jsonl`` (a tenth of the items again under alias ids, for a
second reader) and ``aliases.json`` ({alias id: item id}).
An answer counts as read when the gold set holds its (request, text) pair or when it is the canned refusal
(:func:`latentguard.evaluation.report.is_canned_refusal`); a pair appears once.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from gold_candidates import candidate_row

from latentguard.evaluation.gold import load_gold
from latentguard.evaluation.report import is_canned_refusal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="+", help="evaluations' samples.jsonl files")
    parser.add_argument("--methods", default="", help="comma-separated methods to take (default: all)")
    parser.add_argument("--prefix", required=True, help="id prefix of the items, e.g. gm (must be new to the gold set)")
    parser.add_argument("--alias-prefix", required=True, help="id prefix of the second reading's aliases, e.g. gn")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--second-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.readers < 1 or not 0 <= args.second_share <= 1:
        parser.error(f"--readers must be >= 1 and --second-share in [0, 1], got {args.readers} and {args.second_share}")
    gold = load_gold()
    if any(r.id.startswith(args.prefix) or r.id.startswith(args.alias_prefix) for r in gold):
        raise SystemExit(f"error: the gold set already has ids starting {args.prefix!r} or {args.alias_prefix!r}; "
                         f"pick new prefixes")
    read = {(r.prompt, r.text) for r in gold}
    methods = set(filter(None, args.methods.split(",")))
    out, seen = [], set()
    for path in args.samples:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            row = candidate_row(r, r["method"], Path(path))
            key = (row["prompt"], row["text"])
            if (methods and r["method"] not in methods) or key in read or key in seen or is_canned_refusal(r["text"]):
                continue
            seen.add(key)
            out.append(row)
    rng = random.Random(args.seed)
    rng.shuffle(out)
    for i, row in enumerate(out):
        row["id"] = f"{args.prefix}{i + 1:04d}"
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))

    def item(row: dict, ident: str) -> dict:
        shown = {"prompt_shown_to_model": row["shown_prompt"]} if row["shown_prompt"] else {}
        return {"id": ident, "kind": row["label"], "request": row["prompt"], **shown, "answer": row["text"]}

    for k in range(args.readers):
        (folder / f"items_{k + 1}.jsonl").write_text("".join(json.dumps(item(r, r["id"])) + "\n"
                                                         for r in out[k::args.readers]))
    twice = rng.sample(out, math.ceil(args.second_share * len(out))) if out else []
    aliases = {f"{args.alias_prefix}{i + 1:04d}": r["id"] for i, r in enumerate(twice)}
    (folder / "second_items.jsonl").write_text("".join(json.dumps(item(r, a)) + "\n"
                                                       for a, r in zip(aliases, twice)))
    (folder / "aliases.json").write_text(json.dumps(aliases, indent=1))
    print(f"{len(out)} unread answers -> {folder}: {args.readers} readers, {len(twice)} read twice")


if __name__ == "__main__":
    main()
