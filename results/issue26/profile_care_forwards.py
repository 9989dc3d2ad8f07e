import time, collections, sys
import torch
from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm
from latentguard.lm import state as st
from latentguard.lm import cache as ca
lm = load_lm(); guard = make_guard("latent-probe"); guard.attach(lm)
ctx = RunContext(lm, guard, None, 64, SamplingConfig(temperature=0.7, top_p=0.9), seed=0)
care = make_method("care:b=40:N=5:batch_size=8")
prompts = [r.prompt for r in load_prompt_set("advbench:dev").records[:16]]
stats = collections.defaultdict(lambda: [0, 0.0, 0])
orig_feed_rows = st.DecodeState._feed_rows
def feed_rows(self, rows, chunks):
    t = time.perf_counter(); orig_feed_rows(self, rows, chunks); dt = time.perf_counter() - t
    w = max(len(c) for c in chunks)
    key = "step(1)" if w == 1 else ("wide>=60" if w >= 60 else "narrow 2-59")
    s = stats[key]; s[0] += 1; s[1] += dt; s[2] += sum(len(c) for c in chunks)
st.DecodeState._feed_rows = feed_rows
orig_reserve = ca.GrowingLayer.reserve
def reserve(self, extra):
    t = time.perf_counter(); orig_reserve(self, extra); stats["reserve"][1] += time.perf_counter() - t; stats["reserve"][0] += 1
ca.GrowingLayer.reserve = reserve
orig_compact = st.DecodeState.compact
def compact(self):
    t = time.perf_counter(); orig_compact(self); stats["compact"][1] += time.perf_counter() - t; stats["compact"][0] += 1
st.DecodeState.compact = compact
care.run(prompts[:2], ctx)
for enabled in (True, False, True, False):
    stats.clear(); lm.prefixes.enabled = enabled
    t = time.perf_counter(); care.run(prompts, ctx); total = time.perf_counter() - t
    print("prefix cache", enabled, f"total {total:.1f}s", {k: (v[0], round(v[1], 1), v[2]) for k, v in stats.items()}, flush=True)
