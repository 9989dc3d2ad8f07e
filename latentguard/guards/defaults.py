"""The default trained guards: the user's own or the shipped one (the runtime never trains one).

``make_guard("latent-probe")`` and ``make_guard("embedding")`` return a :class:`DefaultGuard`: it
resolves to the guard trained for the policy model it is attached to (or the embedded default model
when used standalone), in this order:

1. ``<cache>/guards/<model>/<kind>/``, written by ``python train.py guard`` (your own training);
2. the guard shipped with the package for that model (:mod:`latentguard.guards.pretrained`; only the
   embedded default model has one);
3. otherwise it is an error that names the command to run (``python train.py guard``): the runtime
   never starts a 30-minute training run by itself.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from latentguard.common.storage import slug, user_cache_dir
from latentguard.guards.base import Guard


def default_guard_dir(model_id: str, kind: str) -> Path:
    """Where ``python train.py guard`` writes the default guard of ``kind`` for ``model_id``."""
    return user_cache_dir() / "guards" / slug(model_id) / kind


def load_trained_guard(kind: str, folder) -> Guard:
    """Load a trained guard of ``kind`` from ``folder``."""
    if kind == "latent-probe":
        from latentguard.guards.probe import LatentProbe

        return LatentProbe.load(folder)
    from latentguard.guards.embedding import EmbeddingGuard

    return EmbeddingGuard.load(folder)


class DefaultGuard(Guard):
    """The trained ``kind`` guard of whichever policy model it is attached to."""

    @property
    def lineage(self) -> frozenset[str]:
        """The loaded guard's lineage; before one is loaded (the model is not known yet), every
        signal the guard of this kind may rest on: its features, the refusal-marker rule of the
        first guards, and what the default model's guard (cached or shipped) was labelled by. A
        judge is thus never taken for independent of a guard that has not been loaded yet."""
        if self.guard is not None:
            return self.guard.lineage
        features = "features:policy-latents" if self.kind == "latent-probe" else "features:minilm"
        lineage = {features, "rule:refusal-markers"}
        with contextlib.suppress(FileNotFoundError):
            lineage |= DefaultGuard(self.kind).resolve().lineage  # the default model's, not kept
        return frozenset(lineage)

    def __init__(self, kind: str) -> None:
        self.kind = self.name = kind
        self.guard: Guard | None = None

    def resolve(self, lm=None) -> Guard:
        """Load the guard for ``lm``'s model (the default model if ``lm`` is None): the user's own,
        else the shipped one; with neither, say which command trains it (the runtime never trains)."""
        if self.guard is None:
            from latentguard.guards.pretrained import load_pretrained
            from latentguard.lm import DEFAULT_MODEL

            model_id = lm.model_id if lm is not None else DEFAULT_MODEL
            folder = default_guard_dir(model_id, self.kind)
            try:
                self.guard = load_trained_guard(self.kind, folder)
            except FileNotFoundError:
                self.guard = load_pretrained(model_id, self.kind)
            if self.guard is None:
                raise FileNotFoundError(
                    f"no {self.kind} guard for model {model_id!r}: none in {folder} and none shipped. Train it once "
                    f"(about 30 min for a 135M model on 2 cores) with: python train.py guard --kind {self.kind} "
                    f"--model {model_id}")
        return self.guard

    @property
    def threshold(self) -> float:  # type: ignore[override]
        return self.resolve().threshold

    def attach(self, lm) -> None:
        self.resolve(lm).attach(lm)

    def score(self, prompts, responses):
        return self.resolve().score(prompts, responses)

    def score_state(self, prompts, responses, state=None, rows=None):
        return self.resolve(state.lm if state is not None else None).score_state(prompts, responses, state, rows)
