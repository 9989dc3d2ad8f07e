"""Draw the (request, answer) pairs of the gold set from evaluation samples, for labelling by reading.

    python tools/gold_candidates.py --out runs/gold/candidates.jsonl \
        'results/dev-vanilla/samples.jsonl|vanilla|advbench:dev|40' ...

An attacked answer (prompt set ``SET+ATTACK``) keeps the original request as ``prompt`` (what readers
judge it against), the attack's name and the prompt the model saw (``shown_prompt``).

Each source is ``FILE|METHOD|PROMPT_SET|N``: N rows drawn at random (seed 0) from that method on that prompt set. Pairs are
deduplicated on (prompt, text); one answer text appears at most ``--max-same-text`` times over the
set drawn by one call (canned refusals would otherwise fill it); ``--exclude`` files only keep their
pairs from being drawn again. Rows get an id, the request's label, category
and look-alike flag, the method, and nothing a reader should not see while labelling.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path


def candidate_row(sample: dict, method: str, path: Path) -> dict:
    """The candidate of one evaluation sample (a row of ``path``, a ``samples.jsonl``): the original
    request, the answer, the request's label, category and look-alike flag, the method, the run's
    folder, and for an attacked request the attack and the prompt the model saw. No id yet."""
    attack = sample.get("attack") or {}
    return {"prompt": attack.get("request") or sample["prompt"], "text": sample["text"], "label": sample["label"],
            "category": sample.get("category", ""), "lookalike": bool(sample.get("lookalike")), "method": method,
            "source": str(path.parent.name), "attack": sample["prompt_set"].partition("+")[2] if attack else "none",
            "shown_prompt": sample["prompt"] if attack.get("request") else ""}


def parse_source(text: str) -> tuple[Path, str, str, int]:
    parts = text.split("|")
    if len(parts) != 4:
        raise SystemExit(f"error: source {text!r} must be FILE|METHOD|PROMPT_SET|N")
    return Path(parts[0]), parts[1], parts[2], int(parts[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prefix", default="g")
    parser.add_argument("--start", type=int, default=1)
    parser.add_argument("--max-same-text", type=int, default=3)
    parser.add_argument("--exclude", default="", help="a candidates file whose pairs are not drawn again")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seen = set()
    texts: Counter = Counter()
    if args.exclude:
        for line in Path(args.exclude).read_text().splitlines():
            row = json.loads(line)
            seen.add((row["prompt"], row["text"]))
    out = []
    for source in args.sources:
        path, method, prompt_set, n = parse_source(source)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["method"] == method and r["prompt_set"] == prompt_set]
        rng.shuffle(rows)
        taken = 0
        for r in rows:
            key = (r["prompt"], r["text"])
            if taken >= n or key in seen or texts[r["text"]] >= args.max_same_text:
                continue
            seen.add(key)
            texts[r["text"]] += 1
            taken += 1
            out.append(candidate_row(r, method, path))
        print(f"{source}: {taken} of {len(rows)}")
    rng.shuffle(out)
    for i, row in enumerate(out):
        row["id"] = f"{args.prefix}{args.start + i:04d}"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps({"id": r.pop("id"), **r}) + "\n" for r in out))
    print(f"{len(out)} pairs -> {args.out}")


if __name__ == "__main__":
    main()
