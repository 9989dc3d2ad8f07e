"""The request gate (a probe on the request alone, refusing before any token) and its use by critic
search and learned-care, on the tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentguard.agents.registry import make_method
from latentguard.episodes.release import REFUSAL
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.probe import prefill_answers
from latentguard.guards.request_gate import RequestGate, cached_gate_path, load_request_gate
from latentguard.lm import load_lm
from tests.test_policy import PROMPTS, ListFeed, gate_ctx, refusing_policy  # noqa: F401 (fixture)


def gate_for(lm, threshold: float = 0.5, bias: float = 0.0, layer: int = 1) -> RequestGate:
    g = torch.Generator().manual_seed(0)
    h = lm.hidden_size
    head = LinearHead(torch.randn(h, generator=g) / h ** 0.5, torch.tensor(bias), torch.zeros(h), torch.full((h,), 0.5))
    return RequestGate(lm.model_id, layer, "request", head, threshold, {"note": "test"})


def test_the_gate_risk_is_its_logistic_head_over_the_request_mean_of_one_prefill(tiny_lm):
    gate = gate_for(tiny_lm)
    risk = gate.risk(tiny_lm, PROMPTS, batch_size=2)  # two forwards: 2 + 1 prompts
    tiny_lm.capture_layer(1, history=True)
    state = prefill_answers(tiny_lm, PROMPTS, [""] * 3)
    x = state.features(1, "request")  # (3, H)
    h = gate.head
    expected = torch.sigmoid(((x - h.mean) / h.scale) @ h.weight + h.bias).numpy()
    np.testing.assert_allclose(risk, expected, rtol=1e-5, atol=1e-6)
    assert risk.shape == (3,) and len(set(np.round(risk, 6))) == 3


def test_a_saved_gate_reads_back_and_a_wrong_file_is_named(tmp_path, tiny_lm):
    gate = gate_for(tiny_lm, threshold=0.3)
    back = RequestGate.read(gate.save(tmp_path / "g.json"))
    assert (back.model_id, back.layer, back.pooling, back.threshold, back.info) == ("tiny", 1, "request", 0.3, {"note": "test"})
    torch.testing.assert_close(back.head.weight, gate.head.weight)
    (tmp_path / "other.json").write_text(json.dumps({"kind": "latent-probe"}))
    with pytest.raises(ValueError, match=r"other.json' is not a request gate \(kind 'latent-probe'\); retrain it: python train.py gate"):
        RequestGate.read(tmp_path / "other.json")
    with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\), got 1.5"):
        gate_for(tiny_lm, threshold=1.5)


def test_the_gate_is_found_in_the_user_cache_for_its_model_only(tmp_path, monkeypatch, tiny_lm):
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no request gate for 'tiny' .*train one: python train.py gate --model tiny"):
        load_request_gate("tiny")
    gate_for(tiny_lm).save(cached_gate_path("tiny"))
    assert load_request_gate("tiny").layer == 1
    other = gate_for(tiny_lm)
    other.model_id = "smollm2-135m-instruct"
    other.save(tmp_path / "x.json")
    with pytest.raises(ValueError, match="trained for 'smollm2-135m-instruct', not 'tiny'"):
        load_request_gate("tiny", str(tmp_path / "x.json"))


@pytest.fixture()
def cached_gate(tmp_path, monkeypatch):
    """Write a gate of the tiny model with a given threshold into a fresh user cache."""
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path))

    def write(threshold: float) -> None:
        gate_for(load_lm("tiny"), threshold=threshold).save(cached_gate_path("tiny"))
    return write


def test_a_search_gated_by_the_request_gate_refuses_above_its_threshold_only(cached_gate):
    lm = load_lm("tiny")
    risk = gate_for(lm).risk(lm, PROMPTS)
    cut = float(np.sort(risk)[1])  # refuses the two riskiest prompts
    cached_gate(cut)
    spec = "beam-saute:n=2:k=1:block=4"
    plain = make_method(spec).run(PROMPTS, gate_ctx(lm))
    gated = make_method(f"{spec}:gate=request").run(PROMPTS, gate_ctx(lm))
    refused = risk >= cut
    assert refused.sum() == 2
    assert [r.extra["gated"] for r in gated] == refused.tolist()
    assert [r.text for r, g in zip(gated, refused) if g] == [REFUSAL] * 2 and all(r.tokens == 0 for r, g in zip(gated, refused) if g)
    assert [r.text for r, g in zip(gated, refused) if not g] == [r.text for r, g in zip(plain, refused) if not g]


def test_learned_care_with_the_gate_refuses_what_the_gate_refuses_and_nothing_unflagged_else(cached_gate, refusing_policy):  # noqa: F811
    lm = load_lm("tiny")
    risk = gate_for(lm).risk(lm, PROMPTS)
    cut = float(np.max(risk))  # refuses the riskiest prompt only
    cached_gate(cut)
    ctx = gate_ctx(lm)
    own = make_method(f"learned-care:path={refusing_policy}").run(PROMPTS, ctx)
    assert [r.text for r in own] == [REFUSAL] * 3  # the policy alone refuses every prompt at once
    gated = make_method(f"learned-care:path={refusing_policy}:gate=request").run(PROMPTS, ctx)
    assert [r.text == REFUSAL and r.tokens == 0 for r in gated] == (risk >= cut).tolist()
    assert all(r.tokens > 0 and r.extra["decisions"] >= 2 for r, g in zip(gated, risk >= cut) if not g)


def test_learned_care_gate_options_are_checked():
    with pytest.raises(ValueError, match="gate must be 'request' .* got 'yes'"):
        make_method("learned-care:gate=yes")
    with pytest.raises(ValueError, match="give one of the two"):
        make_method("learned-care:gate=request:refuse_confidence=0.85")


def test_train_gate_sets_its_threshold_above_the_dev_lookalikes_it_may_not_refuse(tmp_path, tiny_lm):
    from latentguard.training.gate_training import GateTrainConfig, gate_records, train_gate

    config = GateTrainConfig(model="tiny", out=str(tmp_path / "gate.json"), poolings="request", layers="1", cs="0.1",
                             lookalike_weights="1,3", folds=2, limit=6, max_lookalike_fpr=0.03)
    gate, path = train_gate(config, lm=tiny_lm)
    assert path == tmp_path / "gate.json" and RequestGate.read(path).threshold == gate.threshold
    assert [(r["pooling"], r["layer"], r["lookalike_weight"]) for r in gate.info["cv"]] == [("request", 1, 1.0), ("request", 1, 3.0)]
    dev_looks = [r.prompt for r in gate_records(6) if r.split == "dev" and r.lookalike]
    risk = gate.risk(tiny_lm, dev_looks)
    assert 0 < len(dev_looks) < 33 and risk.max() < gate.threshold  # 3% of fewer than 33 allows none
    assert gate.info["metrics"]["dev"]["lookalikes_refused"] == 0.0
    assert set(gate.info["metrics"]) == {"dev", "dev/plain", "dev/jailbreak", "heldout", "heldout/plain", "heldout/jailbreak"}


def test_served_learned_care_with_the_gate_answers_as_its_batch_run(cached_gate, refusing_policy):  # noqa: F811
    lm = load_lm("tiny")
    risk = gate_for(lm).risk(lm, PROMPTS)
    cached_gate(float(np.max(risk)))  # refuses the riskiest prompt only
    spec = f"learned-care:path={refusing_policy}:gate=request:batch_size=2"
    batch = make_method(spec).run(PROMPTS, gate_ctx(lm))
    feed = ListFeed(PROMPTS, max_rows=2)
    make_method(spec).serve(feed, gate_ctx(lm))
    served = [feed.answers[i] for i in range(3)]
    gated = (risk >= risk.max()).tolist()  # refused before any token; the others decode (and may be refused after a flag)
    assert [r.text == REFUSAL and r.tokens == 0 for r in served] == gated
    assert [r.tokens == 0 for r in batch] == gated


def test_served_requests_refused_at_their_start_free_the_one_row_for_the_next_without_a_step(refusing_policy,  # noqa: F811
                                                                                              monkeypatch):
    from latentguard.envs.decision_env import DecisionVectorEnv

    steps = []
    step = DecisionVectorEnv.step
    monkeypatch.setattr(DecisionVectorEnv, "step", lambda self, actions: steps.append(1) or step(self, actions))
    feed = ListFeed(PROMPTS, max_rows=1)
    make_method(f"learned-care:path={refusing_policy}").serve(feed, gate_ctx(load_lm("tiny")))
    assert sorted(feed.answers) == [0, 1, 2]  # the policy refuses every prompt at once
    assert all(r.text == REFUSAL and r.tokens == 0 for r in feed.answers.values())
    assert steps == [] and [n for n in feed.asked if n][:3] == [1, 1, 1]  # one row, refilled before any decoding step
