"""Guards shipped with the package for the embedded default model.

Training the default latent probe takes about 30 minutes on 2 CPU cores (it samples ~2,000 answers
of the policy), too long for a first run of the demo. So the probe (and the embedding head) that
``python train.py guard`` produced for ``smollm2-135m-instruct`` ship as plain JSON in
``latentguard/guards/pretrained/<model>/<kind>.json``: the head's weights, its config and the dev metrics
it was shipped with. Resolution order of ``make_guard("latent-probe")`` for a model: the user
cache (your own ``train.py guard`` run), then this shipped file.

Re-export after retraining with ``python -m latentguard.training.guard_training export`` (copies the cached
guards of the default model here).
"""

from __future__ import annotations

import json
from pathlib import Path

from latentguard.common.storage import slug
from latentguard.guards.base import Guard
from latentguard.guards.linear_head import LinearHead

FOLDER = Path(__file__).parent / "pretrained"


def pretrained_path(model_id: str, kind: str) -> Path:
    return FOLDER / slug(model_id) / f"{kind}.json"


def load_pretrained(model_id: str, kind: str) -> Guard | None:
    """The shipped guard of ``kind`` for ``model_id``, or None."""
    path = pretrained_path(model_id, kind)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    head = LinearHead.from_dict(data["head"])
    if kind == "latent-probe":
        from latentguard.guards.probe import LatentProbe, ProbeConfig

        return LatentProbe(ProbeConfig(**data["config"]), head)
    from latentguard.guards.embedding import EmbeddingGuard

    return EmbeddingGuard(head, data["config"]["threshold"], data["config"].get("info"))
