"""The streaming API (latentguard.serving.stream): released text as it is released, on the tiny model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from latentguard.agents.base import Rollout
from latentguard.envs.decision_env import CONTINUE, DecisionVectorEnv
from latentguard.episodes.release import REFUSAL
from latentguard.guards import CallableGuard
from latentguard.lm import load_lm
from latentguard.serving import Generator, ReleaseTracker, StreamError, finish_reason

PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three."]
DIGIT = re.compile("[0-9]")


def digit_guard(prompts, responses):
    """Flags an answer with a digit in it (in about a third of the tiny model's answers)."""
    return [float(bool(DIGIT.search(r))) for r in responses]


@pytest.fixture(scope="module")
def gen():
    return Generator(model="tiny", guard=CallableGuard(digit_guard, name="digit"), reward="repetition")


def joined(events, n):
    """Per answer: the deltas joined, the number of events before the last, and the last event."""
    texts, counts, last = [""] * n, [0] * n, [None] * n
    for e in events:
        texts[e.index] += e.delta
        if e.done:
            assert last[e.index] is None  # one last event per answer
            last[e.index] = e
        else:
            assert last[e.index] is None and e.delta  # nothing after the end, no empty deltas
            counts[e.index] += 1
    return texts, counts, last


@pytest.mark.parametrize("method", ["vanilla", "care:b=6:N=1", "care-resample:b=6:N=2", "beam-saute:n=2:k=1:block=4"])
def test_the_stream_joins_to_the_batch_answer(gen, method):
    batch = gen.generate(PROMPTS, method, max_new_tokens=16)
    texts, _, last = joined(gen.stream_many(PROMPTS, method, max_new_tokens=16), len(PROMPTS))
    assert [e.rollout.text for e in last] == [r.text for r in batch]  # streaming changes no answer
    assert texts == [r.text.lstrip() for r in batch]  # the stream shows it all (no leading whitespace)


def test_plain_sampling_releases_token_by_token(gen):
    _, counts, last = joined(gen.stream("Name a fruit.", "vanilla", max_new_tokens=12), 1)
    assert counts[0] >= 6 and last[0].rollout.wait_tokens == 0  # several releases before the end


def long_guard(prompts, responses):
    """Flags an answer over 12 characters: every answer gets flagged once it grows."""
    return [float(len(r) > 12) for r in responses]


def test_care_holds_its_buffer_back_and_ends_a_refusal_as_content_filter():
    """A refused answer's stream is its released text (never the flagged text), then the refusal;
    its finish reason is content_filter; nothing is shown before the buffer has passed a check."""
    gen = Generator(model="tiny", guard=CallableGuard(long_guard, name="long"), reward="")
    events = list(gen.stream_many(PROMPTS, "care-resample:b=6:N=0", max_new_tokens=24))  # N=0: refuse at a flag
    texts, _, last = joined(events, len(PROMPTS))
    refused = [e for e in last if e.rollout.extra["refused"]]
    assert len(refused) == len(PROMPTS)
    for e in refused:
        assert texts[e.index].endswith(REFUSAL) and e.finish_reason == "content_filter"
        assert len(texts[e.index][: -len(REFUSAL)].strip()) <= 12  # only text that passed a check
        assert e.rollout.wait_tokens >= 6


def test_the_decision_env_reports_each_answers_release_as_it_grows():
    lm = load_lm("tiny")
    env = DecisionVectorEnv(2, model=lm, prompts=PROMPTS, guard=CallableGuard(digit_guard), prompt_order="once",
                            buffer=6, max_new_tokens=18, reward="coherence", mode="test")
    seen: dict[int, list[str]] = {}
    records = env.answer_all(lambda obs, masks: np.full(len(obs), CONTINUE), seed=0,
                             on_release=lambda i, text: seen.setdefault(i, []).append(text))
    for record in records:
        texts = seen[record["episode_index"]]
        assert texts[-1] == record["released_text"]
        tracker = ReleaseTracker()  # raises if released text is taken back
        assert "".join(tracker.delta(0, t) for t in texts) + tracker.delta(0, texts[-1], final=True) == texts[-1].lstrip()


def test_the_tracker_holds_back_a_cut_character_and_trailing_space_and_refuses_a_take_back():
    tracker = ReleaseTracker()
    assert tracker.delta(0, "caf\ufffd") == "caf"
    assert tracker.delta(0, "café, \n") == "é,"
    assert tracker.delta(0, "café, I'm sorry") == " I'm sorry"
    assert tracker.delta(0, "\n café, I'm sorry, but ", final=True) == ", but "  # leading space: never shown
    assert tracker.delta(0, "tea") == "tea"  # after its final text an answer is forgotten
    with pytest.raises(StreamError, match="took back released text: 'tea' -> 'coffee'"):
        tracker.delta(0, "coffee")


def test_finish_reasons_follow_the_rollout():
    base = dict(prompt="p", text="t", tokens=8, wall_time=0.0)
    assert finish_reason(Rollout(**base, released_tokens=3), 8) == "stop"
    assert finish_reason(Rollout(**base, released_tokens=8), 8) == "length"
    assert finish_reason(Rollout(**base, released_tokens=2, extra={"refused": True}), 8) == "content_filter"


def test_an_unknown_method_or_a_bad_budget_is_an_error_that_names_it(gen):
    with pytest.raises(ValueError, match="no-such-method"):
        list(gen.stream("Hi", "no-such-method"))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        gen.generate(["Hi"], "vanilla", max_new_tokens=0)
