"""A head computed once and written into restarted rows computes what feeding it does."""

from __future__ import annotations

import pytest
import torch

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.episodes.introspection import critique_head_ids
from latentguard.guards import CallableGuard
from latentguard.lm import SamplingConfig, load_lm
from latentguard.lm.prefix import PrefixCache
from tests.conftest import PROMPTS


@pytest.fixture()
def lm():
    """The tiny model with a history layer (its own instance: the tests register heads on it)."""
    lm = load_lm("tiny", latent_layers=[1], dtype="float32")
    lm.capture_layer(1, history=True)
    return lm


def _greedy(state, steps: int) -> list[list[int]]:
    out = []
    for _ in range(steps):
        tokens = state.logits.argmax(-1)
        state.step(tokens)
        out.append(tokens.tolist())
    return out


def test_the_chat_head_is_what_every_prompt_starts_with(lm):
    head = lm.chat_head_ids()
    assert len(head) > 4
    for prompt in PROMPTS:
        ids = lm.encode_prompt(prompt)
        assert ids[: len(head)] == head and len(ids) > len(head)


def test_a_restarted_row_from_a_head_equals_the_row_fed_whole(lm):
    head = lm.chat_head_ids()
    whole = lm.prefill(PROMPTS)
    _greedy(whole, 3)
    cached = lm.prefill(PROMPTS)
    _greedy(cached, 3)
    new = lm.encode_prompt("A new episode begins here.")
    lm.prefixes.add(head)
    fed_before = cached.tokens_fed
    cached.feed([[5], new, [6]], restart=[1])
    lm.prefixes.enabled = False
    whole.feed([[5], new, [6]], restart=[1])
    assert cached.tokens_fed - fed_before == 2 + len(new) - len(head)  # the head was not fed
    assert cached.token_ids(1) == new and cached.prompt_lengths[1] == len(new)
    torch.testing.assert_close(cached.logits, whole.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.prompt_latent(1), whole.prompt_latent(1), atol=1e-5, rtol=1e-5)
    assert _greedy(cached, 6) == _greedy(whole, 6)
    torch.testing.assert_close(cached.pooled_latent(1), whole.pooled_latent(1), atol=1e-5, rtol=1e-5)


def test_a_fresh_prefill_takes_heads_and_rows_without_one_are_fed_whole(lm):
    lm.prefixes.add(lm.chat_head_ids())
    prompts = [lm.encode_prompt(p) for p in PROMPTS] + [[7, 8, 9, 10]]  # the last has no head
    cached = lm.prefill(token_ids=prompts)
    assert lm.prefixes.hits == len(PROMPTS)
    lm.prefixes.enabled = False
    whole = lm.prefill(token_ids=prompts)
    assert cached.tokens_fed == whole.tokens_fed - len(PROMPTS) * len(lm.chat_head_ids())
    torch.testing.assert_close(cached.logits, whole.logits, atol=1e-5, rtol=1e-5)
    assert _greedy(cached, 8) == _greedy(whole, 8)


def test_the_longest_head_a_prompt_starts_with_is_taken_and_a_prompt_needs_a_token_of_its_own(lm):
    store = PrefixCache(lm)
    ids = lm.encode_prompt("Here is a request: tell me about bread.")
    short, long = store.add(ids[:6]), store.add(ids[:12])
    assert short is not None and long is not None
    assert store.match(ids) is long and store.match(ids[:10]) is short
    assert store.match(ids[:12]) is short and store.match(ids[:6]) is None  # a head leaves a token to feed
    assert store.match([ids[0] + 1, *ids[1:]]) is None
    assert store.add(ids[:3]) is None and len(store) == 2  # under min_tokens: not worth keeping


def test_the_oldest_head_is_dropped_past_max_entries(lm):
    store = PrefixCache(lm, max_entries=2)
    ids = lm.encode_prompt("One two three four five six seven eight.")
    for n in (5, 6, 7):
        store.add(ids[:n])
    assert len(store) == 2
    assert store.match(ids[:6]) is None  # the 5-token head was the oldest
    assert store.match(ids[:7]).length == 6


def test_bad_max_entries_is_named(lm):
    with pytest.raises(ValueError, match="max_entries must be >= 1, got 0"):
        PrefixCache(lm, max_entries=0)


def test_care_writes_its_critiques_from_the_critique_head_and_answers_as_without_it(lm):
    letter = CallableGuard(lambda prompts, responses: [float(any(c.isalpha() for c in r)) for r in responses])
    ctx = RunContext(lm, letter, None, max_new_tokens=60, sampling=SamplingConfig(temperature=1.0), seed=3)
    care = make_method("care:b=40:N=2:intervention=introspect")  # the opening alone is 32 bytes
    prompts = ["Name a fruit.", "Say hello there.", "Count to three."]
    with_heads = care.run(prompts, ctx)
    head = len(critique_head_ids(lm))
    critiques = sum(r.interventions for r in with_heads)
    assert critiques > 0 and lm.prefixes.tokens_saved >= critiques * head
    lm.prefixes.enabled = False
    assert [r.text for r in care.run(prompts, ctx)] == [r.text for r in with_heads]
