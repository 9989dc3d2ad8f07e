"""What CARE costs: its wall time against plain sampling of the same length, same prompts, same run.

CARE runs with the default latent-probe guard (checked every b/2 tokens on the policy's own
latents), b = 40, N = 5, introspection and the refuse fallback; vanilla samples with the same
settings and seeds. Both decode the prompts in batches of 8; times are medians over repeats with
the runs alternating. Each method runs twice per repeat: with the model's prefix cache
(:mod:`latentguard.lm.prefix`: the chat head and CARE's critique head computed once) and without.

    python bench/care.py [--prompts 16] [--tokens 64] [--repeats 3] [--sets benign,harmful]

Last line: one JSON object with care_vs_vanilla_benign (benign dev prompts) and
care_vs_vanilla_harmful (AdvBench dev), with the prefix cache, the same without it
(``..._no_prefix_cache``) and their quotient (``prefix_cache_gain_*``: the ratio with the cache over
the ratio without), the interventions per prompt of each set, how many answers of each method are
the same token for token with and without the cache (``same_text_with_prefix_cache_*``), and (with
the default CARE spec) how many of the 8 reference answers per set recorded with the pre-engine
CARE loop the engine-based CARE reproduces exactly (``same_text_as_pre_engine_*``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import alternate, timed_run

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm

REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "care_reference.json").read_text())
"""CARE's answers recorded with the pre-engine batched loop (8 prompts per set, seed 0)."""


def timed(method, prompts, ctx, prefix_cache: bool = True):
    ctx.lm.prefixes.enabled = prefix_cache
    try:
        return timed_run(method, prompts, ctx)
    finally:
        ctx.lm.prefixes.enabled = True


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
        runs = [(f"{label}{tail}", partial(timed, method, prompts, ctx, cached))
                for cached, tail in ((True, ""), (False, "_no_prefix_cache"))
                for label, method in (("vanilla", vanilla), ("care", care))]
        times, outputs = alternate(runs, args.repeats)
        medians = {k: statistics.median(v) for k, v in times.items()}
        last = outputs[-1]
        care_rollouts, vanilla_rollouts = last["care"], last["vanilla"]
        ratio = medians["care"] / medians["vanilla"]
        before = medians["care_no_prefix_cache"] / medians["vanilla_no_prefix_cache"]
        result[f"care_vs_vanilla_{name}"] = ratio
        result[f"care_vs_vanilla_{name}_no_prefix_cache"] = before
        result[f"prefix_cache_gain_{name}"] = ratio / before
        for method in ("vanilla", "care"):
            same = sum(a.text == b.text for a, b in zip(last[method], last[f"{method}_no_prefix_cache"]))
            result[f"same_text_with_prefix_cache_{method}_{name}"] = f"{same}/{len(prompts)}"
        result[f"interventions_per_prompt_{name}"] = sum(r.interventions for r in care_rollouts) / len(prompts)
        result[f"refused_{name}"] = sum(r.extra["refused"] for r in care_rollouts) / len(prompts)
        result[f"tokens_care_{name}"] = sum(r.tokens for r in care_rollouts)
        result[f"tokens_vanilla_{name}"] = sum(r.tokens for r in vanilla_rollouts)
        result[f"seconds_{name}"] = medians
        reference = REFERENCE["default"].get(name)
        if reference and args.care == "care:b=40:N=5:batch_size=8" and args.tokens == 64:
            for cached, tail in ((True, ""), (False, "_no_prefix_cache")):
                _, again = timed(care, [r["prompt"] for r in reference], ctx, cached)
                same = sum(r.text == ref["text"] for r, ref in zip(again, reference))
                result[f"same_text_as_pre_engine_{name}{tail}"] = f"{same}/{len(reference)}"
        print(f"{spec}: CARE {medians['care']:.1f} s, vanilla {medians['vanilla']:.1f} s, ratio {ratio:.3f} "
              f"(without the prefix cache {before:.3f}); interventions/prompt "
              f"{result[f'interventions_per_prompt_{name}']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
