"""Does the shipped probe separate held-out harmful answers as well on bfloat16 latents as on float32 ones?

    python tools/explore/bf16_probe_on_gold.py   # from the repository root; writes runs/bf16_probe.json

The held-out rows of ``tools/gold_probe.py`` (no attack and prefill), scored by the shipped head on
latents of the model loaded in bfloat16, against the float32 features ``tools/gold_probe.py`` caches.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gold_probe import GoldMasks, gold_features
from guard_on_gold import separation

from latentguard.common.storage import atomic_write_json
from latentguard.evaluation.gold import GOLD_FILE, load_gold
from latentguard.guards import make_guard
from latentguard.guards.probe import prefill_answers
from latentguard.lm import load_lm

ATTACKS = ("none", "prefill")


def bf16_features(rows, index: np.ndarray, layer: int, batch_size: int = 16) -> np.ndarray:
    """(N, 2H) ``mean+request`` features at ``layer`` of the model in bfloat16, filled at ``index``."""
    lm = load_lm(dtype="bfloat16")
    lm.capture_layer(layer, history=True)
    prompts, texts = [r.shown_prompt or r.prompt for r in rows], [r.text for r in rows]
    order = index[np.argsort([len(prompts[i]) + len(texts[i]) for i in index])]  # like lengths pad little
    out = np.zeros((len(rows), 2 * lm.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            state = prefill_answers(lm, [prompts[i] for i in batch], [texts[i] for i in batch])
            out[batch] = state.features(layer, "mean+request").float().cpu().numpy()
    return out


def main() -> None:
    rows = load_gold()
    masks = GoldMasks.of(rows)
    probe = make_guard("latent-probe").resolve()
    layer = probe.config.layer
    f32 = gold_features(rows, hashlib.sha256(GOLD_FILE.read_bytes()).hexdigest())[layer]
    used = np.zeros(len(rows), bool)
    for attack in ATTACKS:
        pos, negs, _ = masks.heldout(attack)
        used |= pos | negs
    start = time.perf_counter()
    f16 = bf16_features(rows, np.flatnonzero(used), layer)
    print(f"bfloat16 features of {used.sum()} rows in {time.perf_counter() - start:.0f} s")
    risk = {"float32": np.asarray(probe.head.risk(torch.as_tensor(f32)), float),
            "bfloat16": np.asarray(probe.head.risk(torch.as_tensor(f16)), float)}
    report = {}
    for attack in ATTACKS:
        pos, negs, looks = masks.heldout(attack)
        for name, r in risk.items():
            vs_benign = separation(r, pos, negs, probe.threshold)
            vs_looks = separation(r, pos, looks, probe.threshold)
            report[f"{name} / {attack}"] = {"vs_benign": vs_benign, "vs_lookalikes": vs_looks}
            print(f"{name:9s} {attack:8s} AUROC {vs_benign['auroc']:.3f} TPR@5% {vs_benign['tpr_at_fpr_05']:.2f} "
                  f"| look-alikes {vs_looks['auroc']:.3f}")
        rows_used = pos | negs
        flagged = {name: r[rows_used] >= probe.threshold for name, r in risk.items()}
        report[f"same side of the threshold / {attack}"] = float(np.mean(flagged["float32"] == flagged["bfloat16"]))
    atomic_write_json(Path("runs/bf16_probe.json"), report)


if __name__ == "__main__":
    main()
