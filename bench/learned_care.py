"""What learned-care costs: its wall time against plain sampling on the held-out mix, same run.

The mix is what issue 25 measures the methods on: the held-out harmful requests (``harm:heldout``,
whole categories and templates no guard or policy was trained on) and the held-out look-alikes
(``benign:heldout``). Each method answers each set in chunks of ``--chunk`` prompts per ``run`` call,
as ``evaluate.py`` does (its ``--chunk``, default 32); the methods alternate within each repeat and
the figure is the median over repeats of the seconds for the whole mix. Plain sampling is
``vanilla`` (batch 32), the default latent-probe guard serves the guarded methods, 64 new tokens at
temperature 0.7 and top-p 0.9, seed 0.

    python bench/learned_care.py [--harmful 217] [--lookalikes 80] [--repeats 3] [--chunk 32]
                                 [--methods learned-care,learned-care:gate=request]

Last line: one JSON object with ``<method>_vs_vanilla`` (seconds on the mix over vanilla's) for
each method, the same per set (``..._harmful``, ``..._lookalikes``), the medians in seconds, and
``refused_at_start_<method>``: the share of harmful requests each method refused before any token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import alternate, timed_chunks

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harmful", type=int, default=217, help="held-out harmful requests (the first N)")
    parser.add_argument("--lookalikes", type=int, default=80, help="held-out look-alikes (the first N)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=32, help="prompts per run call (evaluate.py's --chunk)")
    parser.add_argument("--methods", default="learned-care,learned-care:gate=request")
    args = parser.parse_args()
    if args.chunk < 1 or args.harmful < 1 or args.lookalikes < 1:
        parser.error(f"--chunk, --harmful and --lookalikes must be >= 1, got {args.chunk}, {args.harmful}, "
                     f"{args.lookalikes}")
    specs = [s for s in args.methods.split(",") if s]
    lm = load_lm()
    guard = make_guard("latent-probe")
    guard.attach(lm)
    ctx = RunContext(lm, guard, None, 64, SamplingConfig(temperature=0.7, top_p=0.9), seed=0, guard_spec="latent-probe")
    sets = {"harmful": [r.prompt for r in load_prompt_set("harm:heldout").records][: args.harmful],
            "lookalikes": [r.prompt for r in load_prompt_set("benign:heldout").records if r.lookalike][: args.lookalikes]}
    methods = {"vanilla": make_method("vanilla"), **{s: make_method(s) for s in specs}}
    for method in methods.values():  # warm-up: read policies and gates, first forwards
        method.run(sets["harmful"][:2], ctx)
    runs = [(f"{name}|{part}", partial(timed_chunks, method, prompts, ctx, args.chunk))
            for name, method in methods.items() for part, prompts in sets.items()]
    times, outputs = alternate(runs, args.repeats)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result: dict = {"chunk": args.chunk, "harmful": len(sets["harmful"]), "lookalikes": len(sets["lookalikes"]),
                    "repeats": args.repeats, "seconds": medians}
    base = {part: medians[f"vanilla|{part}"] for part in sets}
    for name in specs:
        mix = sum(medians[f"{name}|{part}"] for part in sets) / sum(base.values())
        result[f"{name}_vs_vanilla"] = mix
        for part in sets:
            result[f"{name}_vs_vanilla_{part}"] = medians[f"{name}|{part}"] / base[part]
        answers = outputs[-1][f"{name}|harmful"]
        result[f"refused_at_start_{name}"] = sum(r.tokens == 0 for r in answers) / len(answers)
        print(f"{name}: {mix:.3f}x vanilla on the mix (harmful {result[f'{name}_vs_vanilla_harmful']:.3f}x, "
              f"look-alikes {result[f'{name}_vs_vanilla_lookalikes']:.3f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
