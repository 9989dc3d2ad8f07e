"""Decoding in bfloat16 against float32 on this machine's CPU: each method's wall time in both, same
prompts, same seeds, same run, the two models alternating.

On a CPU with AMX tiles or AVX-512 BF16 (Intel Sapphire Rapids and later), oneDNN runs bfloat16 matrix
products on them: the weights streamed per decoding step halve and prefills run on the tiles. Without
them bfloat16 is emulated and slower. The answers are not the same token for token (the logits differ
in the third digit); the guard's separation on bfloat16 latents is measured apart (README).

    python bench/dtype.py [--methods vanilla,care,critic-search] [--prompts 16] [--tokens 64] [--repeats 2]

The last line is one JSON object: per method, ``bf16_speedup`` (float32 seconds over bfloat16 seconds,
medians) and ``same_text`` (answers identical in both), and the CPU flags that decide it.
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

FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")


def cpu_flags() -> list[str]:
    """Which of :data:`FLAGS` this CPU has (empty where /proc/cpuinfo cannot be read)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in FLAGS if f in words]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="vanilla,care,critic-search")
    parser.add_argument("--prompts", type=int, default=16, help="harmful and as many benign dev prompts")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prompts = [r.prompt for spec in ("harm:dev", "benign:dev") for r in load_prompt_set(spec).records[: args.prompts]]
    sampling = SamplingConfig(temperature=0.7, top_p=0.9)
    contexts = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_lm(dtype=dtype)
        guard = make_guard("latent-probe")
        guard.attach(lm)
        contexts[dtype] = RunContext(lm, guard, None, args.tokens, sampling, seed=0)
    result: dict = {"cpu_flags": cpu_flags(), "prompts": len(prompts), "tokens": args.tokens, "methods": {}}
    for spec in [m for m in args.methods.split(",") if m]:
        method = make_method(spec)
        for ctx in contexts.values():
            timed_run(method, prompts[:2], ctx)  # warm-up
        runs = [(dtype, partial(timed_run, method, prompts, ctx)) for dtype, ctx in contexts.items()]
        times, outputs = alternate(runs, args.repeats)
        medians = {k: statistics.median(v) for k, v in times.items()}
        last = outputs[-1]
        same = sum(a.text == b.text for a, b in zip(last["float32"], last["bfloat16"]))
        result["methods"][spec] = {"seconds": medians, "bf16_speedup": medians["float32"] / medians["bfloat16"],
                                   "same_text": f"{same}/{len(prompts)}"}
        print(f"{spec}: float32 {medians['float32']:.1f} s, bfloat16 {medians['bfloat16']:.1f} s, "
              f"speedup {medians['float32'] / medians['bfloat16']:.2f}, same text {same}/{len(prompts)}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
