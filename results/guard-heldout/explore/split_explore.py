import pickle, sys
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.training.probe_training import answer_features, fit_head, predict, safe_auroc, Features
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
print("heldout benign", (~ho.harmful_request).sum(), "lookalike", (ho.lookalike & ~ho.harmful_request).sum(),
      "dev benign", (~dv.harmful_request).sum(), "dev lookalike", (dv.lookalike & ~dv.harmful_request).sum())
def feats(a, spec):
    parts = [answer_features(a, p.split(":")[0], int(p.split(":")[1])) for p in spec.split("+")]
    f = parts[0]
    return Features(np.hstack([p.x for p in parts]), f.y, f.groups, f.prefix, f.harmful_request, f.lookalike)
def tpr05(pos, neg):
    cut = np.sort(neg)[min(len(neg) - 1, int(np.ceil(0.95 * len(neg))))]
    return (pos > cut).mean()
for spec, c in (("mean:18+request:18", 0.003), ("mean:18+request:18", 0.01), ("request:18", 0.01)):
    ftr = feats(tr, spec)
    h = fit_head(ftr.x, ftr.y, np.ones(len(ftr.y)), c)
    fd, fh = feats(dv, spec), feats(ho, spec)
    rd, rh = predict(h, fd.x), predict(h, fh.x)
    for pfx in (64, None):
        sd = fd.prefix == pfx if pfx else np.ones(len(rd), bool)
        sh = fh.prefix == pfx if pfx else np.ones(len(rh), bool)
        pos = rh[sh & (fh.y == 1)]
        every = rd[sd & ~fd.harmful_request & ~fd.lookalike]
        look_ho = rh[sh & ~fh.harmful_request]
        look_dv = rd[sd & ~fd.harmful_request & fd.lookalike]
        allneg = np.concatenate([every, look_dv, look_ho])
        au = lambda n: safe_auroc(np.r_[np.ones(len(pos)), np.zeros(len(n))], np.r_[pos, n])
        print(f"{spec} c={c} prefix={pfx}: vs everyday {au(every):.3f} tpr05 {tpr05(pos, every):.2f} | vs heldout lookalikes {au(look_ho):.3f} tpr05 {tpr05(pos, look_ho):.2f} | vs all benign {au(allneg):.3f} tpr05 {tpr05(pos, allneg):.2f}")
