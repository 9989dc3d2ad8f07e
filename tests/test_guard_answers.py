"""Guard-training answers are decoded on the episode engine; their features are those of the prefix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from latentguard.data.attacks import PREFILL
from latentguard.data.prompt_sets import PromptRecord
from latentguard.lm import SamplingConfig, generate, load_lm
from latentguard.training.guard_answers import CollectConfig, _generate_chunk


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


def test_asking_for_a_second_sample_decodes_only_the_new_one(tmp_path, monkeypatch):
    import latentguard.training.guard_answers as guard_answers

    lm = load_lm("tiny", latent_layers=[1])
    records = [PromptRecord(p, "benign") for p in ("Name a fruit.", "Say hi.", "Count to three.")]
    one = CollectConfig(samples=1, max_new_tokens=6, prefixes=(3, 6), layers=(1,), batch_size=2)
    two = CollectConfig(samples=2, max_new_tokens=6, prefixes=(3, 6), layers=(1,), batch_size=2)
    assert one.key() == two.key()  # one shard folder: samples are shards inside it
    first = guard_answers.collect_answers(lm, records, one, tmp_path, progress=False)
    decoded = []
    real = guard_answers._generate_chunk
    monkeypatch.setattr(guard_answers, "_generate_chunk", lambda *a, **k: decoded.append(1) or real(*a, **k))
    both = guard_answers.collect_answers(lm, records, two, tmp_path, progress=False)
    assert len(decoded) == 2 and len(both) == 6  # 2 new batches of the 2nd sample; 3 requests x 2 samples
    assert both.texts[:3] == first.texts and both.prompts[3:] == first.prompts


def test_a_prefilled_answer_reads_its_request_before_the_forced_words_and_its_text_starts_with_them():
    lm = load_lm("tiny", latent_layers=[1], dtype="float32")
    plain = PromptRecord("Name a fruit.", "benign", "train")
    attacked = replace(plain, prefill=PREFILL)
    config = CollectConfig(samples=1, max_new_tokens=6, prefixes=(3, 6), layers=(1,))
    request = lm.prefill([plain.prompt]).latent(1)[0]  # the request's last token, nothing forced after it
    for record in (plain, attacked):
        answers = _generate_chunk(lm, [record], config, seed=0)
        np.testing.assert_allclose(answers.features[("request", 1)][0, 0], request, atol=2e-3)
    assert all(text.startswith(PREFILL) for text in answers.texts[0]) and answers.prompts == [plain.prompt]
    assert lm.assistant_prefill == ""  # the chunk's prefill does not outlive it


def test_one_chunk_takes_one_prefill():
    lm = load_lm("tiny", latent_layers=[1])
    records = [PromptRecord("Say hi.", "benign"), PromptRecord("Say bye.", "benign", prefill=PREFILL)]
    with pytest.raises(ValueError, match="one chunk of answers takes one prefill"):
        _generate_chunk(lm, records, CollectConfig(samples=1, max_new_tokens=2, prefixes=(2,), layers=(1,)), seed=0)
