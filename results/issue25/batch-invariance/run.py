"""Where do answers depend on the batch? On 96 held-out prompts (64 harmful, 32 look-alikes): critic
search in chunks of 32 against one call (a rolling window of 32), with and without the prefix cache;
plain sampling in fixed batches of 32 against a rolling window (Sampling.serve), with and without.

    python results/issue25/batch-invariance/run.py   # about 6 minutes on 2 cores
"""
import json
from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm
from latentguard.rewards import make_reward
from latentguard.agents.base import PromptFeed

class ListFeed(PromptFeed):
    def __init__(self, prompts, max_rows):
        self.waiting = list(enumerate(prompts))[::-1]; self.max_rows = max_rows; self.done = {}
    def take(self, n, idle):
        return [self.waiting.pop() for _ in range(min(n, len(self.waiting)))]
    def finish(self, index, rollout):
        self.done[index] = rollout

lm = load_lm("smollm2-135m-instruct")
guard = make_guard("latent-probe"); guard.attach(lm)
ctx = RunContext(lm, guard, make_reward("relevance"), 64, SamplingConfig(temperature=0.7, top_p=0.9), 0, guard_spec="latent-probe")
prompts = [r.prompt for r in load_prompt_set("harm:heldout").records][:64] + [r.prompt for r in load_prompt_set("benign:heldout").records][:32]
van = make_method("vanilla"); cs = make_method("critic-search"); cs.prepare(ctx)
texts = {}
texts["van_fixed"] = [r.text for i in range(0, 96, 32) for r in van.run(prompts[i:i+32], ctx)]
f = ListFeed(prompts, 32); van.serve(f, ctx); texts["van_rolling"] = [f.done[i].text for i in range(96)]
texts["cs_chunk32"] = [r.text for i in range(0, 96, 32) for r in cs.run(prompts[i:i+32], ctx)]
texts["cs_whole"] = [r.text for r in cs.run(prompts, ctx)]
lm.prefixes.enabled = False
f = ListFeed(prompts, 32); van.serve(f, ctx); texts["van_rolling_noprefix"] = [f.done[i].text for i in range(96)]
texts["cs_whole_noprefix"] = [r.text for r in cs.run(prompts, ctx)]
json.dump(texts, open("runs/batch_invariance_texts.json", "w"))
def diff(a, b): return [i for i in range(96) if texts[a][i] != texts[b][i]]
for a, b in [("van_fixed", "van_rolling"), ("van_fixed", "van_rolling_noprefix"), ("cs_chunk32", "cs_whole"), ("cs_chunk32", "cs_whole_noprefix"), ("cs_whole", "cs_whole_noprefix")]:
    print(a, b, diff(a, b), flush=True)
