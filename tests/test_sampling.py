"""Top-k / top-p filtering keeps exactly the tokens the definitions say."""

from __future__ import annotations

import pytest
import torch

from latentguard.lm.sampling import SamplingConfig, filter_logits, sample_tokens


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    kept = filter_logits(logits, SamplingConfig(top_k=2)).isfinite()
    assert kept.tolist() == [[False, True, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), SamplingConfig(top_p=0.8)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = filter_logits(probs.log(), SamplingConfig(top_p=0.81)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert sample_tokens(logits, SamplingConfig(temperature=0)).tolist() == [1, 0]


def test_sampling_follows_the_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(probs.log(), SamplingConfig(), gen) for _ in range(4000)])
    freq = torch.bincount(draws.flatten(), minlength=3).float() / 4000
    torch.testing.assert_close(freq, probs[0], atol=0.03, rtol=0)


@pytest.mark.parametrize("kwargs,match", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": -2}, "top_k")])
def test_bad_sampling_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize("config", [SamplingConfig(temperature=0.7, top_p=0.9), SamplingConfig(top_k=5),
                                    SamplingConfig(temperature=1.3, top_k=50, top_p=0.8)])
def test_partial_sort_sampling_has_the_filtered_distribution(config):
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(1)) * 3
    expected = filter_logits(logits, config).softmax(-1)[0]
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_tokens(logits.expand(500, -1), config, gen) for _ in range(40)])
    freq = torch.bincount(draws, minlength=1000).float() / len(draws)
    assert set(draws.tolist()) <= set(torch.nonzero(expected).squeeze(-1).tolist())  # only allowed tokens
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_wide_nucleus_falls_back_to_the_full_sort():
    logits = torch.zeros(2, 1000)  # uniform: the 0.9 nucleus has 900 tokens, more than the first 256
    tokens = sample_tokens(logits, SamplingConfig(top_p=0.9), torch.Generator().manual_seed(0))
    assert tokens.shape == (2,)
    draws = torch.cat([sample_tokens(logits, SamplingConfig(top_p=0.9), torch.Generator().manual_seed(s)) for s in range(300)])
    assert draws.max() > 256  # tokens beyond the first candidates are reachable
