"""A standardised logistic head, the trainable part of the probe and embedding guards.

``risk = sigmoid(w . (x - mu) / sigma + b)``. Saved as ``<name>.safetensors`` (w, b, mu, sigma)
beside a ``<name>.json`` config, in one atomically written folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from latentguard.common.storage import atomic_directory, read_json_file, read_safetensors


@dataclass
class LinearHead:
    """Weights of a standardised logistic head over ``D``-dimensional features."""

    weight: torch.Tensor  # (D,)
    bias: torch.Tensor  # ()
    mean: torch.Tensor  # (D,)
    scale: torch.Tensor  # (D,)

    def __post_init__(self) -> None:
        self.weight, self.mean, self.scale = self.weight.float(), self.mean.float(), self.scale.float()
        self.bias = self.bias.float().reshape(())
        for name in ("weight", "mean", "scale"):
            if getattr(self, name).shape != (self.dim,):
                raise ValueError(f"head {name} has shape {tuple(getattr(self, name).shape)}, expected ({self.dim},)")

    @property
    def dim(self) -> int:
        """Feature size ``D``."""
        return self.weight.shape[0]

    @classmethod
    def from_numpy(cls, weight, bias, mean, scale) -> LinearHead:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
        return cls(t(weight), t(bias), t(mean), t(scale))

    def to_dict(self) -> dict:
        """Plain lists (``weight``, ``mean``, ``scale``) and a float ``bias``: the JSON form shipped heads use."""
        out = {k: getattr(self, k).detach().cpu().reshape(-1).tolist() for k in ("weight", "mean", "scale")}
        return out | {"bias": float(self.bias)}

    @classmethod
    def from_dict(cls, d: dict) -> LinearHead:
        """Read :meth:`to_dict`'s form (a one-element ``bias`` list, as older files have, is accepted)."""
        bias = d["bias"][0] if isinstance(d["bias"], list) else d["bias"]
        return cls.from_numpy(d["weight"], bias, d["mean"], d["scale"])

    def to(self, device: torch.device | str) -> LinearHead:
        return LinearHead(*(getattr(self, k).to(device) for k in ("weight", "bias", "mean", "scale")))

    def risk(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B,) float64 risk from (B, D) features."""
        x = torch.as_tensor(x).float().to(self.weight.device)
        logits = ((x - self.mean) / self.scale) @ self.weight + self.bias  # (B,)
        return torch.sigmoid(logits).cpu().numpy().astype(np.float64)

    def save(self, folder: str | Path, name: str, config: dict) -> Path:
        """Write ``name.safetensors`` and ``name.json`` (``config``) into ``folder`` atomically."""
        with atomic_directory(folder) as tmp:
            tensors = {k: getattr(self, k).detach().cpu().contiguous() for k in ("weight", "bias", "mean", "scale")}
            save_file(tensors, str(tmp / f"{name}.safetensors"))
            (tmp / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, name: str) -> tuple[LinearHead, dict]:
        """Read a head and its config saved by :meth:`save`."""
        folder = Path(folder)
        weights, config = folder / f"{name}.safetensors", folder / f"{name}.json"
        if not weights.is_file() or not config.is_file():
            raise FileNotFoundError(f"no {name} in {str(folder)!r}: expected {config.name} and {weights.name} "
                                    "(train one with: python train.py guard)")
        fix = "retrain it (python train.py guard) or point the guard spec at a good folder"
        t = read_safetensors(weights, f"{name} weights", fix)
        missing = sorted({"weight", "bias", "mean", "scale"} - set(t))
        if missing:
            raise ValueError(f"the {name} weights {str(weights)!r} lack {missing}; {fix}")
        return cls(t["weight"], t["bias"], t["mean"], t["scale"]), read_json_file(config, f"{name} config", fix)
