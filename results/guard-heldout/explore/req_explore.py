import pickle, sys
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.training.probe_training import fit_head, predict, safe_auroc
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
R = pickle.load(open("/work/main/runs/guard-explore/req.pkl", "rb"))
pid = {p: i for i, p in enumerate(R["prompts"])}
def reqs(s):
    seen = dict.fromkeys(s.prompts); ps = list(seen)
    hr = {p: h for p, h in zip(s.prompts, s.harmful_request)}
    return np.array([pid[p] for p in ps]), np.array([hr[p] for p in ps]).astype(int)
tr_i, tr_y = reqs(sets["train"]); dv_i, dv_y = reqs(sets["dev"]); ho_i, ho_y = reqs(sets["heldout"])
def test(name, X, cs=(0.001, 0.003, 0.01, 0.03)):
    X = X.astype(np.float32)
    row = []
    for c in cs:
        h = fit_head(X[tr_i], tr_y, np.ones(len(tr_y)), c)
        row.append(f"c{c}: {safe_auroc(dv_y, predict(h, X[dv_i])):.3f}/{safe_auroc(ho_y, predict(h, X[ho_i])):.3f}")
    print(f"{name:14s}", "  ".join(row), flush=True)
print("train reqs", len(tr_i), tr_y.sum(), "heldout", len(ho_i), ho_y.sum())
for L in range(2, 31, 2):
    test(f"last:{L}", R["last"][:, L])
for L in range(2, 31, 4):
    test(f"mean:{L}", R["mean"][:, L])
test("minilm", R["minilm"], cs=(0.01, 0.1, 1, 10))
test("minilm+last18", np.hstack([R["minilm"], R["last"][:, 18]]), cs=(0.003, 0.01, 0.03))
