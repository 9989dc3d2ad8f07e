"""Guard-training answers are decoded on the episode engine; their features are those of the prefix."""

from __future__ import annotations

import numpy as np
import pytest

from envs.lm import SamplingConfig, generate, load_lm
from envs.prompt_sets import PromptRecord
from training.guard_answers import CollectConfig, _generate_chunk


def test_prefix_features_equal_a_fresh_prefill_of_that_prefix():
    lm = load_lm("tiny", latent_layers=[1], dtype="float32")
    record = PromptRecord("Name a fruit.", "benign", "train")
    config = CollectConfig(samples=1, max_new_tokens=12, prefixes=(4, 12, 20), layers=(1,))
    answers = _generate_chunk(lm, [record], config, seed=0)
    ids = generate(lm, [record.prompt], 12, SamplingConfig(temperature=0.7, top_p=0.9), seed=0).completions[0].token_ids
    for slot, prefix in enumerate((4, 12)):
        fresh = lm.prefill(token_ids=[lm.encode_prompt(record.prompt) + ids[:prefix]])
        np.testing.assert_allclose(answers.features[("last", 1)][0, slot], fresh.latent(1)[0], atol=2e-3)
        assert answers.texts[0][slot] == lm.decode(ids[:prefix])
    assert answers.texts[0][2] == answers.texts[0][1] and answers.lengths[0] == len(ids)  # past the end: all of it


def test_prefixes_must_increase():
    with pytest.raises(ValueError, match="prefixes must be increasing"):
        CollectConfig(prefixes=(32, 16))
