"""P(refuse) of the shipped learned-care policy at each answer's first decision, by prompt set."""
import json, sys, numpy as np, torch
from latentguard.lm import load_lm
from latentguard.guards import make_guard
from latentguard.agents.learned_care import LearnedCare
from latentguard.agents.base import RunContext
from latentguard.data.prompt_sets import load_prompt_set

lm = load_lm("smollm2-135m-instruct")
guard = make_guard("latent-probe")
ctx = RunContext(lm=lm, guard=guard, reward=None, guard_spec="latent-probe")
m = LearnedCare()
m.prepare(ctx)
out = {}
for spec in sys.argv[1:]:
    recs = load_prompt_set(spec).records
    for kind, sel in (("harmful", [r for r in recs if r.label == "harmful"]),
                      ("lookalike", [r for r in recs if r.label != "harmful" and r.lookalike]),
                      ("everyday", [r for r in recs if r.label != "harmful" and not r.lookalike])):
        if not sel:
            continue
        prompts = [r.prompt for r in sel]
        probs = []
        for i in range(0, len(prompts), 16):
            vec = m.env(prompts[i:i + 16], ctx)
            obs, _ = vec.reset(seed=0)
            o = torch.as_tensor(obs)
            with torch.no_grad():
                dist = m.model.policy.get_distribution(o, action_masks=vec.action_masks())
                probs.append(dist.distribution.probs.numpy())
        p = np.concatenate(probs)[:, 3]
        out[f"{spec}/{kind}"] = p.tolist()
        print(spec, kind, len(p), "argmax-refuse", float((np.concatenate(probs).argmax(1) == 3).mean()),
              "quantiles", np.round(np.quantile(p, [0.1, 0.25, 0.5, 0.75, 0.9]), 3), flush=True)
json.dump(out, open("runs/refuse_probs.json", "w"))
