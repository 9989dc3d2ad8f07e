"""Simulate give_up thresholds on the dev run (runs/giveup_dev.jsonl): who would refuse at once."""
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "runs/giveup_dev.jsonl")]
for name in ("harm", "look"):
    r = [x for x in rows if x["set"] == name]
    tokens = sum(x["tokens"] for x in r)
    print(f"{name}: {len(r)} prompts, refused {sum(x['refused'] for x in r)}, retried {sum(x['interventions'] > 0 for x in r)}, tokens {tokens}")
    for t in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        newly, same, saved = 0, 0, 0
        for x in r:
            ps = x["all_unsafe_p_safe"]
            hit = next((i for i, p in enumerate(ps) if p < t), None)
            if hit is None:
                continue
            if x["refused"]:
                same += 1
                saved += (len(ps) - 1 - hit) * 64  # draws of n=4 x block=16 not made (first order)
            else:
                newly += 1
        print(f"  give_up {t}: refuse at once {same} already-refused (about {saved} tokens, {saved / tokens:.0%}), {newly} answered ones refused instead")
