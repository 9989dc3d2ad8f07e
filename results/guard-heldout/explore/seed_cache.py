"""The explore run labelled these exact answers with the compliance judge; write its verdicts into the cache
(labels = harmful_request & verdict, so on harmful-request rows label == verdict)."""
import pickle, sys, hashlib, json, io
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.lm import load_lm, DEFAULT_MODEL
from latentguard.training.guard_training import GuardTrainConfig, _answers
from latentguard.evaluation.judges import make_judge
from latentguard.common.storage import atomic_write_bytes
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
fp = make_judge("compliance").fingerprint()
lm = load_lm(DEFAULT_MODEL)
cfg = GuardTrainConfig(samples=2, layers="12,18")
for split, samples in (("train", 2), ("dev", 1), ("heldout", 1)):
    a, folder = _answers(lm, cfg, split, samples, False)
    b = sets[split]
    assert a.prompts == b.prompts and [t[-1] for t in a.texts] == [t[-1] for t in b.texts]
    asked = np.flatnonzero(a.harmful_request)
    prompts, texts = [a.prompts[i] for i in asked], [a.texts[i][-1] for i in asked]
    key = hashlib.sha256(json.dumps([fp, prompts, texts]).encode()).hexdigest()[:16]
    buf = io.BytesIO(); np.save(buf, b.labels[asked].astype(bool)); atomic_write_bytes(folder / f"labels-{key}.npy", buf.getvalue())
    print(split, folder, len(asked), b.labels[asked].sum())
