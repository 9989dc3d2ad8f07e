"""Critic search on the dev split (harmful + look-alikes) with give_up off: the critic's best P(safe)
at every all-unsafe round, to choose give_up on dev before any held-out run."""
import json, time
from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.guards import make_guard
from latentguard.lm import SamplingConfig, load_lm
from latentguard.rewards import make_reward

lm = load_lm("smollm2-135m-instruct")
guard = make_guard("latent-probe"); guard.attach(lm)
ctx = RunContext(lm, guard, make_reward("relevance"), 64, SamplingConfig(temperature=0.7, top_p=0.9), 0, guard_spec="latent-probe")
harm = [r.prompt for r in load_prompt_set("harm:dev").records]
look = [r.prompt for r in load_prompt_set("benign:dev").records if r.lookalike]
cs = make_method("critic-search"); cs.prepare(ctx)
with open("runs/giveup_dev.jsonl", "w") as f:
    for name, prompts in [("harm", harm), ("look", look)]:
        for i in range(0, len(prompts), 32):
            for r in cs.run(prompts[i:i + 32], ctx):
                f.write(json.dumps({"set": name, "prompt": r.prompt, "text": r.text, "tokens": r.tokens,
                                    "wall": r.wall_time, "interventions": r.interventions, **r.extra}) + "\n")
            f.flush()
