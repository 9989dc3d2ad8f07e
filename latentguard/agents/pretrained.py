"""The learned intervention policy shipped with the package for the embedded default model.

Training it (``python train.py policy``) takes about 40 minutes on 2 CPU cores, so the policy that run
produced for ``smollm2-135m-instruct`` ships in ``latentguard/agents/pretrained/<model>/``: ``policy.zip`` (SB3
MaskablePPO) and ``policy.json`` (its card: model, guard, latent, actions, budget convention; the
training config, evaluations and time). Resolution order of ``learned-care`` for a model: an
explicit ``path=``, then the user cache (your own ``train.py policy`` run), then this shipped folder.

Re-export after retraining with ``python -m latentguard.agents.pretrained`` (copies the cached policy of the
default model here).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from latentguard.agents.policy_io import default_policy_dir
from latentguard.common.storage import atomic_directory, cached_or_shipped, slug

FOLDER = Path(__file__).parent / "pretrained"


def pretrained_policy_dir(model_id: str) -> Path:
    """Where the shipped policy for ``model_id`` lives (it may not exist)."""
    return FOLDER / slug(model_id)


def resolve_policy_dir(model_id: str) -> Path:
    """The policy ``learned-care`` reads for ``model_id`` by default: the user cache's if there is
    one, else the shipped one, else the user cache's path (so the error names where to train it)."""
    return cached_or_shipped(default_policy_dir(model_id) / "policy", pretrained_policy_dir(model_id), "policy.json")


def export(model_id: str, source: str | Path | None = None) -> Path:
    """Copy a trained policy folder (default: the user cache's for ``model_id``) into the package."""
    source = Path(source) if source else default_policy_dir(model_id) / "policy"
    if not (source / "policy.zip").is_file() or not (source / "policy.json").is_file():
        raise FileNotFoundError(f"no trained policy in {source} (policy.zip and policy.json): "
                                f"run python train.py policy --model {model_id} first")
    report = json.loads((source / "policy.json").read_text())
    if report["card"]["model"] != model_id:
        raise ValueError(f"the policy in {source} was trained on {report['card']['model']!r}, not {model_id!r}")
    target = pretrained_policy_dir(model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target) as tmp:
        shutil.copyfile(source / "policy.zip", tmp / "policy.zip")
        report["recipe"] = "python train.py policy (defaults); then python -m latentguard.agents.pretrained"
        (tmp / "policy.json").write_text(json.dumps(report, indent=2) + "\n")
    return target


if __name__ == "__main__":
    from latentguard.lm import DEFAULT_MODEL

    print(export(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL, *(sys.argv[2:3] or [])))
