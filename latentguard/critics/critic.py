"""LatentCritic: the value of a latent state with a safety budget (InferenceGuard's critic).

Input: features ``h`` of the policy's latent state (one layer's hidden states pooled over the
answer so far, as the rollouts recorded them) and the Saute safety state ``z`` (relative budget
left). Two heads on one MLP body:

- ``safety``: logit of the probability that the episode ends within budget (``z_T > 0``);
- ``value``: the expected task reward of the finished answer.

Features are standardised with statistics stored in the module, so the critic is self-contained.
Saved as ``critic.safetensors`` + ``critic.json`` (:class:`CriticConfig`: model id, layer, pooling,
latent size, budget convention); :meth:`LatentCritic.check` refuses a policy it was not trained for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from latentguard.common.storage import atomic_directory, read_json_file, read_safetensors
from latentguard.lm.state import feature_width


@dataclass
class CriticConfig:
    """What the critic reads and the budget convention its safety head predicts under."""

    model_id: str
    """Policy model whose latents it reads."""
    layer: int
    """Hidden-state index of the features."""
    pooling: str
    """How the layer is pooled (:data:`latentguard.lm.FEATURE_POOLINGS`): 'mean' over the answer so far,
    'last' token, 'request' or 'mean+request'."""
    latent_size: int
    """Size of the features (twice the model's hidden size for 'mean+request')."""
    hidden: int = 256
    """Width of the MLP body."""
    budget: float = 1.0
    """d: cost units per unit of z (z <- z - cost / d)."""
    convention: dict = field(default_factory=dict)
    """Cost model and rule: guard, cost mode, check period, 'safe iff z_T > 0', z0 range."""


class LatentCritic(nn.Module):
    """MLP over ``[standardised h, z]`` with a safety and a value head (see the module docstring)."""

    feature_mean: torch.Tensor  # buffers (register_buffer), declared for type checkers
    feature_std: torch.Tensor

    def __init__(self, config: CriticConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("feature_mean", torch.zeros(config.latent_size))
        self.register_buffer("feature_std", torch.ones(config.latent_size))
        self.body = nn.Sequential(
            nn.Linear(config.latent_size + 1, config.hidden), nn.SiLU(),
            nn.Linear(config.hidden, config.hidden), nn.SiLU(),
        )
        self.safety_head = nn.Linear(config.hidden, 1)
        self.value_head = nn.Linear(config.hidden, 1)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` (B, H), ``z`` (B,) -> safety logits (B,), values (B,)."""
        x = (h.float() - self.feature_mean) / self.feature_std  # (B, H)
        body = self.body(torch.cat([x, z.float()[:, None]], dim=-1))  # (B, hidden)
        return self.safety_head(body).squeeze(-1), self.value_head(body).squeeze(-1)

    @torch.no_grad()
    def predict(self, h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(safe), value), both (B,)."""
        logits, value = self(h.to(self.feature_mean.device), z.to(self.feature_mean.device))
        return torch.sigmoid(logits), value

    def check(self, lm) -> None:
        """Refuse a policy model this critic was not trained on."""
        cfg = self.config
        lm.check_reader("critic", cfg.model_id, cfg.latent_size // feature_width(cfg.pooling, 1), cfg.layer,
                        f"build one with: python train.py collect --model {lm.model_id} && "
                        f"python train.py critic --model {lm.model_id}")

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """``critic.safetensors`` + ``critic.json`` (+ ``extra`` JSON files), atomically."""
        with atomic_directory(folder) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                      str(tmp / "critic.safetensors"))
            (tmp / "critic.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            for name, payload in (extra or {}).items():
                (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> LatentCritic:
        folder = Path(folder)
        if not (folder / "critic.json").is_file() or not (folder / "critic.safetensors").is_file():
            raise FileNotFoundError(f"no critic in {str(folder)!r} (expected critic.json and critic.safetensors)")
        fix = "retrain it (python train.py critic) or point critic-search:critic=FOLDER at a good one"
        record = read_json_file(folder / "critic.json", "critic config", fix)
        try:
            critic = cls(CriticConfig(**record))
        except TypeError as err:
            raise ValueError(f"the critic config {str(folder / 'critic.json')!r} does not describe a critic ({err}); "
                             f"{fix}") from err
        weights = read_safetensors(folder / "critic.safetensors", "critic weights", fix)
        try:
            critic.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"the critic weights in {str(folder)!r} do not fit its config ({err}); {fix}") from err
        return critic.eval()
