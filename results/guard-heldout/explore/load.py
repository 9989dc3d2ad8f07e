"""Exploration: load cached answers (train 2 samples, dev, heldout), label with compliance, cache."""
import pickle, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main")
from latentguard.lm import load_lm, DEFAULT_MODEL
from latentguard.training.guard_training import GuardTrainConfig, _answers, relabel
from train import guard_labeler

out = Path("/work/main/runs/guard-explore")
t = time.time()
lm = load_lm(DEFAULT_MODEL)
cfg = GuardTrainConfig(samples=2, layers="12,18", cs="0.003,0.01,0.03")
sets = {"train": _answers(lm, cfg, "train", 2, False), "dev": _answers(lm, cfg, "dev", 1, False),
        "heldout": _answers(lm, cfg, "heldout", 1, False)}
print({k: len(v) for k, v in sets.items()}, time.time() - t, flush=True)
lab = guard_labeler("compliance")
for k, v in sets.items():
    print(k, relabel(v, lab), time.time() - t, flush=True)
with open(out / "sets.pkl", "wb") as f:
    pickle.dump(sets, f)
