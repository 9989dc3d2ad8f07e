"""The attention-pooled probe: its pooling against a direct softmax, its decoding path against its
standalone score, its files, and its training (a query that finds the one telling token)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentguard.common.metrics import safe_auroc
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.probe import LatentProbe, ProbeConfig, prefill_answers
from latentguard.lm import load_lm
from latentguard.training.attention_probe import Rows, TokenLatents, fit, predict_rows, token_latents


@pytest.fixture(scope="module")
def lm():
    return load_lm("tiny")


def attention_probe(lm, layer=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = lm.hidden_size
    head = LinearHead(torch.randn(2 * h, generator=gen), torch.tensor(0.1), torch.zeros(2 * h), torch.ones(2 * h))
    query = (torch.randn(h, generator=gen) * 0.5).tolist()
    return LatentProbe(ProbeConfig(lm.model_id, layer, "attention+request", h, 0.5, {}, query), head)


def test_attention_pooling_is_a_softmax_over_the_response_tokens(lm):
    lm.capture_layer(1, history=True)
    state = prefill_answers(lm, ["Name a fruit.", "Hi"], ["An apple, surely.", "Hello there"])
    query = torch.randn(lm.hidden_size)
    states, response = state.response_states(1)
    for row in range(2):
        h = states[row][response[row]].float()  # (L, H)
        expected = (torch.softmax(h @ query, 0)[:, None] * h).sum(0)
        torch.testing.assert_close(state.attention_pooled(1, query, [row])[0].float(), expected, atol=1e-5, rtol=1e-5)
    # a zero query weighs every response token alike: the mean
    torch.testing.assert_close(state.attention_pooled(1, torch.zeros(lm.hidden_size)), state.pooled_latent(1),
                               atol=1e-5, rtol=1e-5)


def test_attention_probe_reads_while_decoding_what_it_scores_standalone(lm):
    probe = attention_probe(lm)
    probe.attach(lm)
    from latentguard.envs.token_env import TokenCMDPEnv

    env = TokenCMDPEnv(model=lm, prompts=["Name a fruit."], guard=probe, guard_every=3, max_new_tokens=6)
    env.reset(seed=0)
    for _ in range(6):
        _, _, _, _, info = env.step(0)
        if "risk" in info:
            text = lm.decode(env.episodes.responses[0])
            ids = env.episodes.responses[0][:]
            state = lm.prefill(token_ids=[lm.encode_prompt("Name a fruit.") + ids])
            state.prompt_lengths = torch.tensor([len(lm.encode_prompt("Name a fruit."))])
            standalone = probe.head.risk(probe.features_from_state(state, [0]))[0]
            assert info["risk"] == pytest.approx(standalone, abs=1e-5), text
    assert probe.forwards == 0


def test_attention_probe_round_trips_and_checks_its_query(lm, tmp_path):
    probe = attention_probe(lm)
    loaded = LatentProbe.load(probe.save(tmp_path / "p"))
    assert loaded.config.query == pytest.approx(probe.config.query)
    np.testing.assert_allclose(loaded.score(["Hi"], ["Hello"]), probe.score(["Hi"], ["Hello"]), atol=1e-6)
    with pytest.raises(ValueError, match="needs a query of 64 values"):
        LatentProbe(ProbeConfig(lm.model_id, 1, "attention+request", lm.hidden_size, 0.5, {}, None), probe.head)


def test_token_latents_are_the_response_states_left_aligned(lm):
    latents = token_latents(lm, ["Name a fruit."], ["An apple."], [1], max_tokens=8)
    state = prefill_answers(lm, ["Name a fruit."], ["An apple."], 8)
    states, response = state.response_states(1)
    n = int(response[0].sum())
    assert latents.lengths.tolist() == [n]
    np.testing.assert_allclose(latents.hidden[1][0, :n], states[0][response[0]].numpy(), atol=1e-2)
    assert not latents.hidden[1][0, n:].any()


def test_attention_finds_the_telling_token_that_the_mean_dilutes():
    # 600 answers of 16 tokens: noise, and one "telling" token at a random place whose direction marks the
    # unsafe ones; averaged over 16 tokens it is faint, attended to it is plain.
    rng = np.random.default_rng(0)
    n, t, h = 600, 16, 8
    hidden = rng.normal(size=(n, t, h)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.int64)
    where = rng.integers(0, t, n)
    hidden[np.arange(n), where, 0] = 6.0  # the telling token stands out on dimension 0 ...
    hidden[np.arange(n), where, 1] = np.where(y == 1, 1.5, -1.5)  # ... and says which on dimension 1
    latents = TokenLatents({0: hidden.astype(np.float16)}, {0: np.zeros((n, h), np.float32)}, np.full(n, t))
    rows = Rows(np.arange(n), np.full(n, t), y, np.ones(n), np.arange(n), y == 1, np.zeros(n, bool))
    train, test = rows.select(np.arange(400)), rows.select(np.arange(400, n))
    mean = safe_auroc(test.y, predict_rows(fit("mean+request", latents, 0, train, 1.0), latents, 0, test))
    attention = safe_auroc(test.y, predict_rows(fit("attention+request", latents, 0, train, 1.0), latents, 0, test))
    assert attention > 0.95 and attention > mean + 0.05
