import pickle, sys, time
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.training.probe_training import answer_features, fit_head, predict, evaluate, Features
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
P = tr.prefixes

def feats(a, spec):
    parts = [answer_features(a, *p.split(":")[:1], int(p.split(":")[1])) for p in spec.split("+")]
    f = parts[0]
    return Features(np.hstack([p.x for p in parts]), f.y, f.groups, f.prefix, f.harmful_request, f.lookalike)

def report(name, risk_fn):
    out = []
    for a, nm in ((dv, "dev"), (ho, "heldout")):
        f, r = risk_fn(a)
        m = evaluate(f, r, 0.5, P)
        out.append(f"{nm} auroc_vb {m['auroc_vs_benign']:.3f} tpr05 {m.get('tpr_at_fpr_05', float('nan')):.2f} auroc {m['auroc']:.3f}")
    print(f"{name:40s}", " | ".join(out), flush=True)

def single(spec, c):
    ftr = feats(tr, spec)
    h = fit_head(ftr.x, ftr.y, np.ones(len(ftr.y)), c)
    def risk(a):
        f = feats(a, spec); return f, predict(h, f.x)
    return risk

def factor(req_spec, ans_spec, c1, c2, comply_rows="harmful"):
    fr = feats(tr, req_spec)
    h1 = fit_head(fr.x, fr.harmful_request.astype(int), np.ones(len(fr.y)), c1)
    fa = feats(tr, ans_spec)
    m = fa.harmful_request if comply_rows == "harmful" else np.ones(len(fa.y), bool)
    h2 = fit_head(fa.x[m], fa.y[m], np.ones(m.sum()), c2)
    def risk(a):
        f1 = feats(a, req_spec); f2 = feats(a, ans_spec)
        return f2, predict(h1, f1.x) * predict(h2, f2.x)
    return risk

t = time.time()
for c in (0.003, 0.01):
    report(f"mean+request:18 c={c}", single("mean:18+request:18", c))
report("mean12+mean18+req12+req18 c=.003", single("mean:12+mean:18+request:12+request:18", 0.003))
for c in (0.001, 0.003, 0.01):
    report(f"request:18 harmful_req c={c}", (lambda h: (lambda a: (feats(a, "request:18"), predict(h, feats(a, "request:18").x))))(
        fit_head(feats(tr, "request:18").x, feats(tr, "request:18").harmful_request.astype(int), np.ones(len(tr.labels) * 3), c)))
for L in (12, 18):
    for c1, c2 in ((0.003, 0.003), (0.003, 0.03), (0.01, 0.01)):
        report(f"factor req:{L} x mean:{L} {c1},{c2}", factor(f"request:{L}", f"mean:{L}", c1, c2))
report("factor req12+18 x mean12+18", factor("request:12+request:18", "mean:12+mean:18", 0.003, 0.01))
print(time.time() - t)
