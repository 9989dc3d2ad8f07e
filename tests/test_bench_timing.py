"""The benchmarks' shared timing loop: alternating order, every output kept."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from timing import alternate, timed_chunks, timed_run


def test_alternate_reverses_the_order_on_odd_repeats_and_keeps_each_output():
    calls = []

    def call(name, seconds):
        def run():
            calls.append(name)
            return seconds, f"{name}{calls.count(name)}"
        return run

    times, outputs = alternate([("a", call("a", 1.0)), ("b", call("b", 2.0))], repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert times == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    assert outputs == [{"a": "a1", "b": "b1"}, {"b": "b2", "a": "a2"}, {"a": "a3", "b": "b3"}]


def test_alternate_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        alternate([("a", lambda: (0.0, None))], repeats=0)


def test_timed_run_returns_the_method_output_and_its_seconds():
    class Sleeper:
        def run(self, prompts, ctx):
            time.sleep(0.05)
            return [f"{p}:{ctx}" for p in prompts]

    seconds, rollouts = timed_run(Sleeper(), ("a", "b"), "ctx")
    assert rollouts == ["a:ctx", "b:ctx"] and 0.05 <= seconds < 1.0


def test_timed_chunks_hands_the_prompts_over_in_chunks_and_keeps_their_order():
    class Recorder:
        calls: list = []

        def run(self, prompts, ctx):
            self.calls.append(list(prompts))
            return [p.upper() for p in prompts]

    method = Recorder()
    seconds, rollouts = timed_chunks(method, ["a", "b", "c", "d", "e"], None, chunk=2)
    assert method.calls == [["a", "b"], ["c", "d"], ["e"]]
    assert rollouts == ["A", "B", "C", "D", "E"] and seconds >= 0


def test_timed_chunks_needs_a_chunk():
    with pytest.raises(ValueError, match="chunk must be >= 1, got 0"):
        timed_chunks(None, ["a"], None, chunk=0)
