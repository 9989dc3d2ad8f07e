"""Upweighting look-alike negatives (and all benign answers) when fitting mean+request:18."""
import pickle, sys
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.training.probe_training import answer_features, fit_head, predict, Features
from latentguard.training.guard_training import _heldout_vs
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
f = answer_features(tr, "mean+request", 18)
for look_w in (1.0, 3.0, 10.0):
    w = np.where((f.y == 0) & f.lookalike & ~f.harmful_request, look_w, 1.0)
    h = fit_head(f.x, f.y, w, 0.003)
    def risk_of(a):
        ff = answer_features(a, "mean+request", 18); return ff, predict(h, ff.x)
    r = _heldout_vs(ho, dv, risk_of, 0.5)
    print(look_w, {k: (round(r[k]["auroc_vs_benign"], 3), round(r[k]["tpr_at_fpr_05"], 2)) for k in r}, flush=True)
