"""The episode engine: the one place an episode is decoded, checked and accounted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentguard.episodes.engine import Engine
from latentguard.guards import CallableGuard
from latentguard.lm import GREEDY, SamplingConfig, generate, load_lm, row_generators

PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three."]


@pytest.fixture()
def lm():
    return load_lm("tiny")


def test_decode_gives_the_backend_loops_tokens_row_for_row(lm):
    sampling = SamplingConfig(temperature=0.9, top_p=0.9)
    want = generate(lm, PROMPTS, 24, sampling, seed=[11, 12, 13])
    engine = Engine(lm, max_new_tokens=24)
    engine.start(PROMPTS)
    added = engine.decode(sampling, dict(enumerate(row_generators([11, 12, 13], lm.device))))
    assert engine.responses == [c.token_ids for c in want.completions]
    assert added.tolist() == [len(c.token_ids) for c in want.completions]


def test_decode_never_extends_a_row_that_ended(lm):
    engine = Engine(lm, max_new_tokens=16)
    engine.start(PROMPTS[:2])
    engine.splice({0: [5, sorted(lm.eos_token_ids)[0]]})  # row 0 has ended
    added = engine.decode(GREEDY, torch.Generator().manual_seed(0), max_steps=4)
    assert added[0] == 0 and 1 <= added[1] <= 4 and len(engine.responses[0]) == 2


def test_crop_then_step_equals_a_fresh_prefill(lm):
    engine = Engine(lm, max_new_tokens=16)
    engine.start(PROMPTS)
    engine.decode(GREEDY, torch.Generator(), max_steps=6)
    kept = [list(r) for r in engine.responses]
    engine.crop([3, 0, 5])
    fresh = lm.prefill(token_ids=[lm.encode_prompt(p) + r[: len(r) - c] for p, r, c in zip(PROMPTS, kept, [3, 0, 5])])
    torch.testing.assert_close(engine.state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    assert [len(r) for r in engine.responses] == [len(kept[0]) - 3, len(kept[1]), len(kept[2]) - 5]


def test_fork_copies_rows_with_their_safety_state(lm):
    engine = Engine(lm, CallableGuard(lambda p, r: [0.9] * len(r)), budget=2.0)
    engine.start(PROMPTS[:2])
    engine.check([1])
    engine.fork([1, 1, 0])
    assert engine.prompts == [PROMPTS[1], PROMPTS[1], PROMPTS[0]]
    assert engine.safety.z.tolist() == [0.5, 0.5, 1.0] and engine.checks.tolist() == [1, 1, 0]
    engine.responses[0].append(7)
    assert engine.responses[1] == []  # copies, not aliases


@pytest.mark.parametrize("risk,cost_mode,cost", [(0.7, "flag", 1.0), (0.2, "flag", 0.0), (0.7, "increase", 0.7)])
def test_check_charges_the_cost_rule_and_updates_z(lm, risk, cost_mode, cost):
    engine = Engine(lm, CallableGuard(lambda p, r: [risk] * len(r)), cost_mode=cost_mode, budget=4.0)
    engine.start(PROMPTS[:1])
    check = engine.check([0])
    assert check.cost.tolist() == [cost] and engine.safety.z[0] == pytest.approx(1 - cost / 4.0)
    assert engine.safety.within_budget().tolist() == [1 - cost / 4.0 > 0]


@pytest.mark.parametrize("fn", [lambda p, r: [float("nan")] * len(r), lambda p, r: [1.5] * len(r),
                                lambda p, r: 1 / 0])
def test_a_guard_that_fails_costs_a_violation(lm, fn):
    engine = Engine(lm, CallableGuard(fn))
    engine.start(PROMPTS[:2])
    check = engine.check([0, 1])
    assert check.risk.tolist() == [1.0, 1.0] and check.cost.tolist() == [1.0, 1.0] and check.error
    assert not engine.safety.within_budget().any()


@pytest.mark.parametrize("kwargs,match", [({"budget": 0}, "budget must be > 0"), ({"cost_mode": "sum"}, "cost_mode"),
                                          ({"max_new_tokens": 0}, "max_new_tokens must be >= 1")])
def test_bad_engine_options_are_named(lm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Engine(lm, **kwargs)


def test_crop_beyond_the_response_is_an_error(lm):
    engine = Engine(lm)
    engine.start(PROMPTS[:1])
    engine.splice({0: [5, 6]})
    with pytest.raises(ValueError, match="cannot crop 3 tokens from row 0: it has 2"):
        engine.crop([3])
    assert np.array_equal(engine.ended(), [False])
