"""How many of CARE's forwards run on few rows: one batch-API call on bench/serve.py's 16 prompts.

    python results/issue26/profile_care_tail.py   (output: profile_care_tail.txt)

Each forward of the decoding state (``latentguard.lm.state.forward_rows``) is timed and grouped by
the rows it ran on (0-3, 4-7, ...) and by whether it fed one token per row (a step) or more (a feed:
prompts, critiques, rewrites).
"""

import collections
import time

import latentguard.lm.state as state_module
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.serving import Generator

log = []
original = state_module.forward_rows


def timed(model, cache, index, **inputs):
    start = time.perf_counter()
    out = original(model, cache, index, **inputs)
    log.append((len(index), inputs["input_ids"].shape[1], time.perf_counter() - start))
    return out


state_module.forward_rows = timed
records = load_prompt_set("default").records
harmful = [r.prompt for r in records if r.label == "harmful"]
benign = [r.prompt for r in records if r.label == "benign"]
prompts = [p for pair in zip(harmful, benign) for p in pair][:16]
gen = Generator()
gen.generate(prompts[:2], method="care", max_new_tokens=8)  # warm-up
log.clear()
start = time.perf_counter()
gen.generate(prompts, method="care", max_new_tokens=64)
print(f"one call, 16 prompts: {time.perf_counter() - start:.1f} s, {len(log)} forwards")
groups = collections.defaultdict(lambda: [0, 0.0])
for rows, width, seconds in log:
    key = (min(rows, 16) // 4 * 4, "step" if width == 1 else "feed")
    groups[key][0] += 1
    groups[key][1] += seconds
print("rows  kind  forwards  seconds  seconds/forward")
for (rows, kind), (n, seconds) in sorted(groups.items()):
    print(f"{rows:>2}-{rows + 3:<2} {kind:5s} {n:8d} {seconds:8.2f} {seconds / n:10.4f}")
