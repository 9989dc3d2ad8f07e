"""Content fingerprints of the files a run's samples depend on: the model, the guard, the critics,
the fitted judges and the gold set.

``evaluate.py`` records them in ``config.json``; a resumed run compares them with the files as they
are now, so a retrained probe or critic under the same spec is never mixed into old samples
silently (:func:`changed`). A file is fingerprinted by its size and the SHA-256 of its first and last
4 MiB (a model file of gigabytes is not read whole); a folder by all its files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 4 << 20


def digest(path: str | Path) -> str | None:
    """Fingerprint of a file or a folder (``None`` if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}|{size}|".encode())
        with f.open("rb") as stream:
            h.update(stream.read(CHUNK))
            if size > 2 * CHUNK:
                stream.seek(-CHUNK, 2)
                h.update(stream.read(CHUNK))
    return h.hexdigest()[:16]


def guard_files(spec: str, model_id: str) -> Path | None:
    """The file or folder a guard spec loads for ``model_id`` (None: a guard with no files of ours)."""
    from latentguard.guards.defaults import default_guard_dir
    from latentguard.guards.pretrained import pretrained_path

    name, _, arg = spec.strip().partition(":")
    if name not in ("latent-probe", "embedding"):
        return None
    if arg:
        return Path(arg)
    cached = default_guard_dir(model_id, name)
    return cached if cached.exists() else pretrained_path(model_id, name)


def run_fingerprints(config, methods) -> dict[str, str | None]:
    """``{"model": ..., "guard": ..., "critic:<method>": ...}`` for an :class:`~latentguard.evaluation.runner.EvalConfig`."""
    from latentguard.lm import resolve_model

    source = resolve_model(config.model)
    out: dict[str, str | None] = {"model": digest(source.location) if source.kind in ("gguf", "local") else source.model_id}
    files = guard_files(config.guard, source.model_id) if config.guard else None
    out["guard"] = digest(files) if files is not None else config.guard
    for method in methods:
        folder = getattr(method, "critic_folder", None)
        if folder is not None:
            out[f"critic:{method.spec}"] = digest(folder(source.model_id))
    return out


def changed(old: dict, new: dict) -> dict[str, tuple]:
    """Keys whose fingerprint differs (a key the old record lacks is not a change)."""
    return {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v}
