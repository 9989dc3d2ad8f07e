"""What CARE costs: its wall time against plain sampling of the same length, same prompts, same run.

CARE runs with the default latent-probe guard (checked every b/2 tokens on the policy's own
latents), b = 40, N = 5, introspection and the refuse fallback; vanilla samples with the same
settings and seeds. Both decode the prompts in batches of 8; times are medians over repeats with
the two methods alternating.

    python bench/care.py [--prompts 16] [--tokens 64] [--repeats 3] [--sets benign,harmful]

Last line: one JSON object with care_vs_vanilla_benign (benign dev prompts) and
care_vs_vanilla_harmful (AdvBench dev), plus the interventions per prompt of each, and (with the
default CARE spec) how many of the 8 reference answers per set recorded with the pre-engine CARE
loop the engine-based CARE reproduces exactly (``same_text_as_pre_engine_*``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import alternate

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm

REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "care_reference.json").read_text())
"""CARE's answers recorded with the pre-engine batched loop (8 prompts per set, seed 0)."""


def timed(method, prompts, ctx):
    start = time.perf_counter()
    rollouts = method.run(prompts, ctx)
    return time.perf_counter() - start, rollouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--care", default="care:b=40:N=5:batch_size=8")
    parser.add_argument("--sets", default="benign,harmful", help="which prompt sets to time, comma-separated")
    args = parser.parse_args()
    sets = {"benign": "benign:dev", "harmful": "advbench:dev"}
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in sets]
    if unknown or not names:
        parser.error(f"--sets takes names from {sorted(sets)}, got {args.sets!r}")
    lm = load_lm()
    guard = make_guard("latent-probe")
    guard.attach(lm)
    ctx = RunContext(lm, guard, None, args.tokens, SamplingConfig(temperature=0.7, top_p=0.9), seed=0)
    vanilla, care = make_method("vanilla:batch_size=8"), make_method(args.care)
    result = {"care": args.care, "tokens": args.tokens, "prompts": args.prompts}
    for name, spec in ((n, sets[n]) for n in names):
        prompts = [r.prompt for r in load_prompt_set(spec).records[: args.prompts]]
        timed(vanilla, prompts[:2], ctx), timed(care, prompts[:2], ctx)  # warm-up
        times, outputs = alternate([("vanilla", partial(timed, vanilla, prompts, ctx)),
                                    ("care", partial(timed, care, prompts, ctx))], args.repeats)
        care_rollouts, vanilla_rollouts = outputs[-1]["care"], outputs[-1]["vanilla"]
        ratio = statistics.median(times["care"]) / statistics.median(times["vanilla"])
        result[f"care_vs_vanilla_{name}"] = ratio
        result[f"interventions_per_prompt_{name}"] = sum(r.interventions for r in care_rollouts) / len(prompts)
        result[f"refused_{name}"] = sum(r.extra["refused"] for r in care_rollouts) / len(prompts)
        result[f"tokens_care_{name}"] = sum(r.tokens for r in care_rollouts)
        result[f"tokens_vanilla_{name}"] = sum(r.tokens for r in vanilla_rollouts)
        result[f"seconds_{name}"] = {k: statistics.median(v) for k, v in times.items()}
        reference = REFERENCE["default"].get(name)
        if reference and args.care == "care:b=40:N=5:batch_size=8" and args.tokens == 64:
            again = care.run([r["prompt"] for r in reference], ctx)
            same = sum(r.text == ref["text"] for r, ref in zip(again, reference))
            result[f"same_text_as_pre_engine_{name}"] = f"{same}/{len(reference)}"
        print(f"{spec}: CARE {statistics.median(times['care']):.1f} s, vanilla {statistics.median(times['vanilla']):.1f} s, "
              f"ratio {ratio:.3f}; interventions/prompt {result[f'interventions_per_prompt_{name}']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
