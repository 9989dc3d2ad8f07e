"""The cascade guard: the first guard everywhere, the second only inside the uncertain band, both on
a common threshold scale; and the band's calibration on scored rows."""

from __future__ import annotations

import numpy as np
import pytest

from latentguard.common.metrics import tpr_at_fpr
from latentguard.guards import CallableGuard, make_guard
from latentguard.guards.cascade import CascadeGuard, calibrate_band, cascade_risk


class Recorder(CallableGuard):
    """A guard returning fixed risks per response text, recording what it was asked."""

    def __init__(self, risks: dict[str, float], threshold: float, name: str) -> None:
        super().__init__(lambda ps, rs: [risks[r] for r in rs], threshold=threshold, name=name)
        self.seen: list[str] = []

    def score(self, prompts, responses):
        self.seen += list(responses)
        return super().score(prompts, responses)


def test_only_rows_inside_the_band_reach_the_second_guard():
    first = Recorder({"a": 0.05, "b": 0.3, "c": 0.55, "d": 0.95}, threshold=0.4, name="first")
    second = Recorder({"a": 1.0, "b": 0.9, "c": 0.1, "d": 0.0}, threshold=0.5, name="second")
    guard = CascadeGuard(first, second, low=0.2, high=0.6)
    risk = guard.score(["p"] * 4, ["a", "b", "c", "d"])
    assert second.seen == ["b", "c"] and guard.asked == 2 and guard.scored == 4
    # outside the band: the first risk rescaled (0.05 -> 0.5*0.05/0.4; 0.95 -> 0.5 + 0.5*0.55/0.6);
    # inside: the second risk rescaled with its own threshold 0.5 (unchanged)
    np.testing.assert_allclose(risk, [0.0625, 0.9, 0.1, 0.5 + 0.5 * 0.55 / 0.6])
    assert guard.flags(["p"] * 4, ["a", "b", "c", "d"]).tolist() == [False, True, False, True]


def test_cascade_spec_builds_members_and_band():
    guard = make_guard("cascade(keyword, degenerate, low=0.1, high=0.9)")
    assert isinstance(guard, CascadeGuard) and (guard.low, guard.high) == (0.1, 0.9)
    assert guard.first.name == "keyword" and guard.second.name == "degenerate"
    with pytest.raises(ValueError, match="cascade\\(FIRST, SECOND, low=L, high=H\\)"):
        make_guard("cascade(keyword, degenerate)")
    with pytest.raises(ValueError, match="low <= high"):
        make_guard("cascade(keyword, degenerate, low=0.9, high=0.1)")


def test_tpr_at_fpr_keeps_the_negatives_above_the_threshold_within_the_rate():
    rng = np.random.default_rng(0)
    risk = rng.random(400)
    positive = rng.random(400) < 0.3
    tpr, threshold = tpr_at_fpr(risk, positive, 0.05)
    assert (risk[~positive] >= threshold).mean() <= 0.05
    assert tpr == pytest.approx((risk[positive] >= threshold).mean())
    lower = np.max(risk[~positive & (risk < threshold)], initial=-1.0)  # one step lower breaks the rate
    assert (risk[~positive] >= lower).mean() > 0.05


def test_calibration_finds_the_band_where_the_second_guard_fixes_the_first():
    # the first guard is right outside [0.4, 0.6) and a coin inside it; the second is always right
    rng = np.random.default_rng(1)
    positive = rng.random(1000) < 0.4
    r1 = np.where(positive, rng.uniform(0.6, 1.0, 1000), rng.uniform(0.0, 0.4, 1000))
    confused = rng.random(1000) < 0.2
    r1[confused] = rng.uniform(0.4, 0.6, confused.sum())
    r2 = positive.astype(float)
    band = calibrate_band(r1, r2, positive, 0.5, 0.5, max_asked=0.3, fpr=0.0)
    assert band["first_tpr"] < 0.95 and band["tpr"] == 1.0
    assert band["asked"] <= 0.3 and band["low"] <= 0.4 + 0.02 and band["high"] >= 0.6 - 0.02
    flags = cascade_risk(r1, r2, 0.5, 0.5, band["low"], band["high"])
    assert tpr_at_fpr(flags, positive, 0.0)[0] == band["tpr"]


def test_a_model_probe_runs_its_own_model_and_never_reads_the_policy_state():
    import torch

    from latentguard.guards.linear_head import LinearHead
    from latentguard.guards.probe import ModelProbe, ProbeConfig
    from latentguard.lm import load_lm

    reader = load_lm("tiny")
    gen = torch.Generator().manual_seed(0)
    h = reader.hidden_size
    head = LinearHead(torch.randn(2 * h, generator=gen), torch.tensor(0.0), torch.zeros(2 * h), torch.ones(2 * h))
    probe = ModelProbe(ProbeConfig("tiny", 1, "mean+request", h, 0.5, {"labels": "compliance"}), head)
    policy = load_lm("tiny", seed=1)  # another model: its state would give other latents
    probe.attach(policy)
    state = policy.prefill(["Hi"])
    standalone = probe.score(["Hi"], ["Hello"])
    assert probe.score_state(["Hi"], ["Hello"], state, [0]) == pytest.approx(standalone)
    assert probe.forwards == 2 and probe.lineage == frozenset({"features:latents:tiny", "labeller:compliance"})
