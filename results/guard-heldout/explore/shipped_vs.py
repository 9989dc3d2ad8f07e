"""The probe shipped before (AdvBench, refusal labels, mean:18) on the same held-out answers and labels."""
import pickle, sys, json
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.guards.pretrained import load_pretrained
from latentguard.training.guard_training import _heldout_vs
from latentguard.training.probe_training import answer_features, evaluate
old = load_pretrained("smollm2-135m-instruct", "latent-probe")
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
def risk_of(a):
    f = answer_features(a, "mean", 18)
    return f, old.head.risk(f.x)
thr = old.threshold
out = {"heldout_vs": _heldout_vs(sets["heldout"], sets["dev"], risk_of, thr),
       "dev": evaluate(*risk_of(sets["dev"]), thr, sets["dev"].prefixes)}
for k in ("everyday", "lookalikes"):
    d = out["heldout_vs"][k]
    print(k, {x: round(d[x], 3) for x in ("auroc_vs_benign", "tpr_at_fpr_05", "auroc_vs_benign_prefix_64", "tpr_at_fpr_05_prefix_64", "tpr", "fpr_benign")})
d = out["dev"]; print("dev", {x: round(d[x], 3) for x in ("auroc_vs_benign", "tpr_at_fpr_05", "tpr", "fpr_benign", "fpr_lookalike")})
json.dump(out, open("/work/main/runs/guard-explore/shipped_before.json", "w"), default=float)
