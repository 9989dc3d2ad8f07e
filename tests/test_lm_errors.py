"""Bad input to the backend gets an error that names the value and the fix."""

from __future__ import annotations

import pytest
import torch

from latentguard.lm import load_lm, resolve_model
from latentguard.lm.loading import resolve_device


def test_unknown_model_name_lists_the_accepted_forms():
    with pytest.raises(ValueError, match=r"unknown model 'smollm-9000'.*hub id.*\.gguf"):
        resolve_model("smollm-9000")


def test_missing_gguf_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="GGUF file not found.*nope.gguf"):
        load_lm(str(missing))


def test_missing_local_folder_names_the_path():
    with pytest.raises(FileNotFoundError, match=r"model folder not found: './no/such/model'"):
        resolve_model("./no/such/model")


def test_hub_model_offline_says_nothing_is_downloaded_unasked(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="(?s)could not load model 'no-such-org/no-such-model'.*downloads nothing"):
        load_lm("no-such-org/no-such-model")


def test_absent_device_is_named():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device 'cuda' is not available.*device='cpu'"):
        resolve_device("cuda")


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        load_lm("tiny", dtype="float8")


def test_empty_batch_is_refused(tiny_lm):
    with pytest.raises(ValueError, match="at least one prompt"):
        tiny_lm.prefill([])


def test_prompt_longer_than_context_names_its_length(tiny_lm):
    too_long = [7] * (tiny_lm.context_length + 1)
    with pytest.raises(ValueError, match=rf"prompt 0 has {tiny_lm.context_length + 1} tokens, over the context window"):
        tiny_lm.prefill(token_ids=[too_long])


def test_stepping_past_the_context_window_is_refused(tiny_lm):
    state = tiny_lm.prefill(token_ids=[[7] * tiny_lm.context_length])
    with pytest.raises(ValueError, match="over the model's context window"):
        state.step([5])


def test_cropping_more_than_a_row_has_names_the_row(tiny_lm):
    state = tiny_lm.prefill(["hello", "a longer prompt here"])
    state.step([5, 6])
    with pytest.raises(ValueError, match="cannot crop 2 tokens from row 1: it has 1 response tokens"):
        state.crop([0, 2])


def test_latent_of_an_uncaptured_layer_says_how_to_capture_it(tiny_lm):
    state = tiny_lm.prefill(["hello"])
    lm = load_lm("tiny")  # captures only the middle layer
    state = lm.prefill(["hello"])
    with pytest.raises(KeyError, match="layer 2 is not captured"):
        state.latent(2)


def test_empty_prompt_is_refused(tiny_lm):
    with pytest.raises(ValueError, match="prompt is empty"):
        tiny_lm.prefill(["  "])
