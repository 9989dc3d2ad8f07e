import pickle, sys
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.guards.pretrained import load_pretrained
from latentguard.training.probe_training import answer_features
p = load_pretrained("smollm2-135m-instruct", "latent-probe")
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
ho = sets["heldout"]
f = answer_features(ho, "mean+request", 18)
r = p.head.risk(f.x).reshape(len(ho), -1)[:, -1]
idx = [i for i in range(len(ho)) if not ho.harmful_request[i] and ho.lookalike[i]]
idx.sort(key=lambda i: -r[i])
for i in idx[:8]:
    print(round(float(r[i]), 3), ho.prompts[i][:110])
print("median lookalike", np.median(r[idx]), "median unsafe", np.median(r[ho.labels == 1]))
