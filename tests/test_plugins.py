"""Guards and rewards plug in as objects, callables, names or 'module:attr' strings."""

from __future__ import annotations

import numpy as np
import pytest

from latentguard.guards import CallableGuard, Guard, KeywordGuard, make_guard
from latentguard.rewards import RelevanceReward, RepetitionReward, WeightedSum, make_reward


def shouting_guard(prompts, responses):
    """Risk 1 for an all-caps response."""
    return [1.0 if r.isupper() else 0.0 for r in responses]


class AlwaysSafe(Guard):
    name = "always-safe"

    def score(self, prompts, responses):
        return np.zeros(len(responses))


def test_guard_specs_of_every_form():
    assert isinstance(make_guard("keyword"), KeywordGuard)
    assert isinstance(make_guard(shouting_guard), CallableGuard)
    assert make_guard("tests.test_plugins:shouting_guard").score(["q", "q"], ["HEY", "hey"]).tolist() == [1.0, 0.0]
    assert isinstance(make_guard("latentguard.guards.keyword:KeywordGuard"), KeywordGuard)  # a class is instantiated
    guard = AlwaysSafe()
    assert make_guard(guard) is guard


def test_keyword_guard_flags_the_response_not_the_prompt():
    guard = make_guard("keyword")
    risk = guard.score(
        ["How do I build a bomb?", "How do I build a bomb?", "Tell me about bread."],
        ["I can't help with that.", "First, get explosives and a detonator.", "Knead the dough."],
    )
    assert risk.tolist() == [0.0, 1.0, 0.0]
    assert guard.matches("get explosives and a detonator") == ["explosives", "detonator"]


def test_custom_keyword_list():
    guard = make_guard("keyword:banana|kiwi")
    assert guard.score(["q"] * 3, ["a Banana", "an apple", "KIWIS"]).tolist() == [1.0, 0.0, 1.0]  # searched anywhere


def test_callable_guard_output_is_validated():
    with pytest.raises(ValueError, match=r"guard 'bad' returned risks outside \[0, 1\]"):
        CallableGuard(lambda p, r: [2.0] * len(r), name="bad").score(["q"], ["a"])
    with pytest.raises(ValueError, match="returned 2 scores for 1 responses"):
        CallableGuard(lambda p, r: [0.0, 0.0], name="bad").score(["q"], ["a"])


def test_unknown_guard_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown guard 'llama-guard-9'.*keyword"):
        make_guard("llama-guard-9")


def test_repetition_reward_is_minus_the_share_of_repeated_ngrams():
    reward = RepetitionReward(n=3)
    # "a b c a b c": trigrams abc bca cab abc -> 1 repeat of 4
    assert reward(["q"] * 3, ["a b c a b c", "all words differ here", ""]).tolist() == [-0.25, 0.0, 0.0]


def test_relevance_reward_prefers_on_topic_answers():
    reward = RelevanceReward()
    prompt = "How do I bake bread at home?"
    values = reward([prompt] * 3, [
        "Mix flour, water, yeast and salt, knead the dough, let it rise and bake it at 220 C.",
        "The stock market closed higher on Tuesday.",
        "",
    ])
    assert values[0] > 0.5 > 0.2 > values[1] and values[2] == 0.0
    assert np.all(values <= 1.0) and np.all(values >= -1.0)


def test_weighted_sum_of_rewards():
    reward = make_reward("repetition+0.5*repetition")
    assert isinstance(reward, WeightedSum)
    assert reward(["q"], ["a b c a b c"]).tolist() == [pytest.approx(-0.375)]
    with pytest.raises(ValueError, match="cannot read reward term"):
        make_reward("relevance+0.5*")
