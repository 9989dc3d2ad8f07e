"""Cache folder and atomic writes: nothing half-written survives an interruption."""

from __future__ import annotations

import json

import pytest

from latentguard.common.storage import atomic_directory, atomic_write_json, user_cache_dir
from latentguard.lm.loading import cached_gguf_folder, resolve_model


def test_cache_dir_follows_latentguard_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path / "c"))
    assert user_cache_dir() == tmp_path / "c"


def test_interrupted_directory_leaves_no_trace(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "ckpt") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_an_existing_folder(tmp_path):
    for version in (1, 2):
        with atomic_directory(tmp_path / "ckpt") as tmp:
            atomic_write_json(tmp / "config.json", {"version": version})
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == {"version": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_default_model_is_dequantized_once(default_lm):
    folder = cached_gguf_folder(resolve_model("smollm2-135m-instruct").location)
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert cached_gguf_folder(resolve_model("smollm2-135m-instruct").location) == folder
    assert weights.stat().st_mtime_ns == before
    assert json.loads((folder / "config.json").read_text()).get("quantization_config") is None
