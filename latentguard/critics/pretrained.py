"""The latent critic shipped with the package for the embedded default model.

Collecting rollouts and training the default critic takes about 26 minutes on 2 CPU cores, too long
for a first run of the demo. So the critic that ``python train.py collect`` + ``python train.py
critic`` produced for ``smollm2-135m-instruct`` ships in ``latentguard/critics/pretrained/<model>/``:
``critic.safetensors`` (weights stored as float16; 0.73 MB) and ``critic.json`` (its
:class:`~latentguard.critics.critic.CriticConfig`: model, layer, pooling, budget convention), with the
``metrics.json`` it was shipped with. Resolution order of ``critic-search`` for a model: an explicit
``critic=PATH``, then the user cache (your own ``train.py critic`` run), then this shipped folder.

Re-export after retraining with ``python -m latentguard.critics.pretrained`` (copies the cached critic of the
default model here).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from latentguard.common.storage import atomic_directory, cached_or_shipped, slug

FOLDER = Path(__file__).parent / "pretrained"


def pretrained_critic_dir(model_id: str) -> Path:
    """Where the shipped critic for ``model_id`` lives (it may not exist)."""
    return FOLDER / slug(model_id)


def resolve_critic_dir(model_id: str) -> Path:
    """The critic ``critic-search`` reads for ``model_id`` by default: the user cache's if there is
    one, else the shipped one, else the user cache's path (so the error names where to build it)."""
    from latentguard.critics.training import default_critic_dir

    return cached_or_shipped(default_critic_dir(model_id), pretrained_critic_dir(model_id), "critic.json")


def export(model_id: str) -> Path:
    """Copy the user cache's critic for ``model_id`` into the package (weights as float16)."""
    from safetensors.torch import save_file

    from latentguard.critics.critic import LatentCritic
    from latentguard.critics.training import default_critic_dir

    source = default_critic_dir(model_id)
    critic = LatentCritic.load(source)
    target = pretrained_critic_dir(model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target) as tmp:
        weights = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in critic.state_dict().items()}
        save_file(weights, str(tmp / "critic.safetensors"))
        (tmp / "critic.json").write_text((source / "critic.json").read_text())
        metrics = json.loads((source / "metrics.json").read_text()) if (source / "metrics.json").is_file() else {}
        recipe = "python train.py collect && python train.py critic (defaults); then python -m latentguard.critics.pretrained"
        (tmp / "metrics.json").write_text(json.dumps({**metrics, "recipe": recipe}, indent=2) + "\n")
    return target


if __name__ == "__main__":
    from latentguard.lm import DEFAULT_MODEL

    print(export(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL))
