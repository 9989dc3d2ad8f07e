"""Latent critic: save/load, training targets, resume, bad data; critic search and its baselines."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.critics.rollouts import RolloutConfig, collect_rollouts
from latentguard.critics.training import CriticTrainConfig, load_steps, train_critic
from latentguard.guards import CallableGuard
from latentguard.lm import GREEDY, SamplingConfig, generate, load_lm

PROMPTS = ["Name a fruit.", "Say hello there."]
WIDE = "narrow_start=false:degenerate=0"
"""Critic search before its narrow start and degenerate-text redraws: every round n wide (what these
tests count), no rule on the text."""


@pytest.fixture(scope="module")
def lm():
    return load_lm("tiny")


def constant_critic(lm, safety_logit: float, tmp_path, name="c"):
    critic = LatentCritic(CriticConfig("tiny", lm.latent_layer, "mean", lm.hidden_size, hidden=8))
    torch.nn.init.zeros_(critic.safety_head.weight)
    torch.nn.init.constant_(critic.safety_head.bias, safety_logit)
    return critic.save(tmp_path / name)


def ctx_for(lm, tokens=20, sampling=GREEDY):
    return RunContext(lm, CallableGuard(lambda p, r: [0.0] * len(r)), lambda p, r: [float(len(x)) for x in r],
                      max_new_tokens=tokens, sampling=sampling)


def test_critic_round_trips_and_refuses_another_model(lm, tmp_path):
    critic = LatentCritic(CriticConfig("tiny", 1, "mean", 64, hidden=16))
    critic.save(tmp_path / "c")
    loaded = LatentCritic.load(tmp_path / "c")
    h, z = torch.randn(5, 64), torch.linspace(-1, 1, 5)
    for a, b in zip(critic(h, z), loaded(h, z)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    loaded.check(lm)
    with pytest.raises(ValueError, match="trained on model 'smollm2-135m-instruct', not 'tiny'"):
        LatentCritic(CriticConfig("smollm2-135m-instruct", 1, "mean", 64)).check(lm)
    with pytest.raises(ValueError, match="latents of size 576, but 'tiny' has 64"):
        LatentCritic(CriticConfig("tiny", 1, "mean", 576)).check(lm)


def test_all_unsafe_critic_takes_the_fallback_after_m_retries(lm, tmp_path):
    path = constant_critic(lm, -20.0, tmp_path)
    rollouts = make_method(f"critic-search:critic={path}:n=4:k=2:block=4:m=2:give_up=0:{WIDE}").run(PROMPTS, ctx_for(lm))
    for r in rollouts:
        assert r.extra["refused"] and r.interventions == 2 and r.text == "I'm sorry, but I can't help with that."
        assert r.tokens == 4 * 4 * 3  # n candidates x block x (1 + m) attempts


def test_a_critic_that_sees_no_safe_candidate_gives_up_without_drawing_again(lm, tmp_path):
    path = constant_critic(lm, -3.0, tmp_path)  # P(safe) = sigmoid(-3) = 0.047 for every candidate: all unsafe
    spec = f"critic-search:critic={path}:n=4:k=2:block=4:m=2:{WIDE}"
    patient, quitting = (make_method(f"{spec}:give_up={g}").run(PROMPTS, ctx_for(lm)) for g in (0.04, 0.05))
    p_safe = round(1 / (1 + np.exp(3.0)), 4)
    for r in patient:  # the best P(safe) is above give_up: two more draws, then the fallback
        assert r.extra["refused"] and r.interventions == 2 and r.extra["all_unsafe_p_safe"] == [p_safe] * 3
    for r in quitting:  # below it: the fallback at once
        assert r.extra["refused"] and r.interventions == 0 and r.tokens == 4 * 4
        assert r.extra["all_unsafe_p_safe"] == [p_safe]


def test_all_safe_critic_with_one_beam_is_blockwise_sampling(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)
    search = make_method(f"critic-search:critic={path}:n=1:k=1:block=8").run(PROMPTS, ctx_for(lm))
    assert [r.text for r in search] == [c.text for c in generate(lm, PROMPTS, 20).completions]
    assert all(r.interventions == 0 and r.guard_calls == 3 for r in search)  # blocks of 8, 8, 4


def test_a_retry_is_decoded_beside_the_other_prompts_next_round(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)
    calls = []

    def flags_the_first_prompt_once(prompts, responses):  # the first draw of PROMPTS[0] is flagged, then none
        calls.append(len(responses))
        return [float(len(calls) == 1 and p == PROMPTS[0]) for p in prompts]

    ctx = RunContext(lm, CallableGuard(flags_the_first_prompt_once), lambda p, r: [0.0] * len(r), max_new_tokens=20,
                     sampling=GREEDY)
    first, second = make_method(f"critic-search:critic={path}:n=4:k=2:block=4:m=2:confident=0:{WIDE}").run(PROMPTS, ctx)
    assert calls == [8, 8, 8, 8, 8, 4]  # the retry shares pass 2 with the second prompt's round 2; nobody waits
    assert (first.interventions, first.tokens, first.extra["refused"]) == (1, 4 * 4 * 6, False)
    assert (second.interventions, second.tokens) == (0, 4 * 4 * 5)


def test_a_prompt_refused_early_leaves_the_others_answers_unchanged(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)
    prompts = ["Count to three.", *PROMPTS]

    def flags_the_first_prompt(prompts_, responses):
        return [float(p == prompts[0]) for p in prompts_]

    ctx = RunContext(lm, CallableGuard(flags_the_first_prompt), lambda p, r: [0.0] * len(r), max_new_tokens=20,
                     sampling=SamplingConfig(temperature=1.0, top_p=1.0))
    method = make_method(f"critic-search:critic={path}:n=4:k=2:block=4:m=1")
    refused, *rest = method.run(prompts, ctx)
    assert refused.extra["refused"] and refused.interventions == 1
    assert [r.text for r in rest] == [r.text for r in method.run(PROMPTS, ctx)]


@pytest.mark.parametrize("confident,tokens", [(0.9, 4 * 4 + 4 * 4), (0, 4 * 4 * 5)])
def test_a_confident_critic_narrows_the_search_to_one_candidate(lm, tmp_path, confident, tokens):
    path = constant_critic(lm, 20.0, tmp_path)
    spec = f"critic-search:critic={path}:n=4:k=2:block=4:confident={confident}:{WIDE}"
    search = make_method(spec).run(PROMPTS, ctx_for(lm))
    assert [r.tokens for r in search] == [tokens, tokens]  # round 1 is n wide; then one candidate if confident
    assert [r.text for r in search] == [c.text for c in generate(lm, PROMPTS, 20).completions]


def test_a_narrow_start_opens_each_prompt_with_one_candidate(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)  # P(safe) = 1: confident from the first draw
    spec = f"critic-search:critic={path}:n=4:k=2:block=4:confident=0.9:degenerate=0"
    wide, narrow = (make_method(f"{spec}:narrow_start={x}").run(PROMPTS, ctx_for(lm)) for x in ("false", "true"))
    assert [r.tokens for r in narrow] == [5 * 4, 5 * 4] and [r.tokens for r in wide] == [4 * 4 + 4 * 4] * 2
    assert [r.text for r in narrow] == [r.text for r in wide]  # the first candidate's seed is the same


def test_a_narrow_start_widens_the_retry_of_an_unsafe_first_draw(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)
    calls = []

    def flags_the_first_pass(prompts, responses):
        calls.append(len(responses))
        return [float(len(calls) == 1)] * len(prompts)

    ctx = RunContext(lm, CallableGuard(flags_the_first_pass), lambda p, r: [0.0] * len(r), max_new_tokens=20,
                     sampling=GREEDY)
    first, second = make_method(f"critic-search:critic={path}:n=4:k=2:block=4:m=2:degenerate=0").run(PROMPTS, ctx)
    assert calls == [2, 8, 2, 2, 2, 2]  # one draw each, unsafe; n draws each; then one candidate per round
    assert all(r.interventions == 1 and r.tokens == 4 + 4 * 4 + 4 * 4 and not r.extra["refused"] for r in (first, second))


def test_degenerate_draws_are_drawn_again_like_unsafe_ones(lm, tmp_path):
    path = constant_critic(lm, 20.0, tmp_path)  # every candidate safe by the critic and the guard
    spec = f"critic-search:critic={path}:n=2:k=1:block=4:m=1:narrow_start=false"
    plain = make_method(f"{spec}:degenerate=0").run(PROMPTS, ctx_for(lm))
    method = make_method(f"{spec}:degenerate=0.3")
    method.degenerate_rule = CallableGuard(lambda prompts, texts: [0.3 * (p == PROMPTS[0]) for p in prompts])
    flagged, clean = method.run(PROMPTS, ctx_for(lm))
    assert flagged.extra["refused"] and flagged.interventions == 1 and flagged.tokens == 2 * 4 * 2  # drawn again, then refused
    assert (clean.text, clean.interventions) == (plain[1].text, 0)
    assert not plain[0].extra["refused"]


def test_a_search_answer_does_not_depend_on_the_batch_it_shares(lm, tmp_path):
    path = constant_critic(lm, 1.0, tmp_path)
    ctx = ctx_for(lm, sampling=SamplingConfig(temperature=1.0, top_p=1.0))
    method = make_method(f"critic-search:critic={path}:n=4:k=2:block=4:confident=0.99")
    alone = [method.run([p], ctx)[0].text for p in PROMPTS]
    together = [r.text for r in method.run(PROMPTS, ctx)]
    swapped = [r.text for r in method.run(PROMPTS[::-1], ctx)][::-1]
    assert alone == together == swapped


def test_critic_search_without_a_critic_says_which_commands_to_run(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python train.py collect --model tiny\n.*python train.py critic --model tiny"):
        make_method("critic-search").run(PROMPTS, ctx_for(lm))


def test_the_user_cache_critic_wins_over_the_shipped_one_and_export_keeps_its_predictions(lm, tmp_path, monkeypatch):
    from latentguard.critics import pretrained
    from latentguard.critics.training import default_critic_dir

    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "shipped")
    assert pretrained.resolve_critic_dir("tiny") == default_critic_dir("tiny")  # neither: the error names the cache
    critic = LatentCritic(CriticConfig("tiny", lm.latent_layer, "mean", lm.hidden_size, hidden=16))
    torch.nn.init.constant_(critic.safety_head.bias, 20.0)  # every candidate safe: no retries
    critic.save(default_critic_dir("tiny"))
    shipped = pretrained.export("tiny")
    assert shipped == tmp_path / "shipped" / "tiny" and pretrained.resolve_critic_dir("tiny") == default_critic_dir("tiny")
    shutil.rmtree(default_critic_dir("tiny"))
    assert pretrained.resolve_critic_dir("tiny") == shipped
    loaded = LatentCritic.load(shipped)  # float16 weights on disk, float32 in the module
    h, z = torch.randn(6, lm.hidden_size), torch.linspace(-1, 2, 6)
    assert loaded.body[0].weight.dtype == torch.float32
    for a, b in zip(critic(h, z), loaded(h, z)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-2)
    search = make_method(f"critic-search:n=2:k=1:block=4:confident=0:{WIDE}").run(PROMPTS[:1], ctx_for(lm, tokens=8))
    assert search[0].interventions == 0 and search[0].tokens == 2 * 8  # found the shipped critic: 2 candidates x 8 tokens


def test_the_shipped_default_critic_is_for_the_default_model():
    from latentguard.critics.pretrained import pretrained_critic_dir
    from latentguard.lm import DEFAULT_MODEL

    folder = pretrained_critic_dir(DEFAULT_MODEL)
    critic = LatentCritic.load(folder)
    assert (critic.config.model_id, critic.config.pooling, critic.config.latent_size) == (DEFAULT_MODEL, "mean+request", 2 * 576)
    assert critic.config.convention["guard"] == "latent-probe"
    assert (folder / "critic.safetensors").stat().st_size < 1_000_000
    assert json.loads((folder / "metrics.json").read_text())["held_out"]["auroc_16"] > 0.7


@pytest.mark.parametrize("spec,match", [("critic-search:k=5:n=4", "k \\(beams kept\\) must be <= n"),
                                        ("beam-saute:budget=0", "budget and z0 must be > 0"),
                                        ("critic-search:fallback=pray", "unknown fallback 'pray'"),
                                        ("critic-search:give_up=2", r"give_up must be a probability in \[0, 1\]")])
def test_bad_search_options_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        make_method(spec)


def test_beam_saute_ranks_safe_candidates_by_reward(lm):
    # the guard flags answers longer than 6 characters: every flagged candidate's z drops to 0
    ctx = RunContext(lm, CallableGuard(lambda p, r: [float(len(x) > 6) for x in r]), lambda p, r: [float(len(x)) for x in r],
                     max_new_tokens=4, sampling=ctx_for(lm).sampling)
    rollout = make_method("beam-saute:n=4:k=1:block=4:m=0:fallback=best").run(PROMPTS[:1], ctx)[0]
    assert rollout.guard_calls == 4


@pytest.fixture(scope="module")
def rollouts(lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rollouts")
    guard = CallableGuard(lambda p, r: [float("bomb" in q.lower()) for q in p])  # flags harmful requests
    config = RolloutConfig(model="tiny", out=str(folder), samples=2, max_new_tokens=12, num_envs=6,
                           shard_episodes=8, limit=2, layer=1, reward="repetition")
    collect_rollouts(config, lm=lm, guard=guard, progress=False)
    return folder


def test_rollout_shards_hold_every_job_once(rollouts):
    manifest = json.loads((rollouts / "manifest.json").read_text())
    steps, report = load_steps(rollouts)
    assert manifest["jobs"] == 20 and report["steps"] == 20 * 13  # 10 prompts (2 per labelled set and label) x 2 samples, t = 0..12
    assert set(steps.step.tolist()) == set(range(13))


def copy_of(rollouts, tmp_path):
    folder = tmp_path / "rollouts"
    shutil.copytree(rollouts, folder)
    return folder


def first_shard(folder):
    with np.load(next(folder.glob("shard-00000.npz"))) as data:
        return {k: data[k] for k in data.files}


def train_config(rollouts, tmp_path, epochs):
    return CriticTrainConfig(model="tiny", rollouts=str(rollouts), out=str(tmp_path / "critic"), epochs=epochs,
                             batch_size=64, hidden=16)


def checkpoint_epoch(tmp_path) -> int:
    return torch.load(tmp_path / "critic-checkpoint" / "state.pt", weights_only=False)["epoch"]


def test_critic_training_writes_weights_and_metrics(rollouts, tmp_path):
    _, report = train_critic(train_config(rollouts, tmp_path, epochs=2), progress=False)
    assert {"auroc_8", "auroc_16", "auroc_32", "value_mae"} <= set(report["held_out"])
    assert (tmp_path / "critic" / "critic.safetensors").exists() and (tmp_path / "critic" / "metrics.json").exists()
    assert checkpoint_epoch(tmp_path) == 1  # epochs counted from 0


def test_critic_training_resumes_from_its_checkpoint(rollouts, tmp_path):
    train_critic(train_config(rollouts, tmp_path, epochs=2), progress=False)
    train_critic(train_config(rollouts, tmp_path, epochs=3), progress=False)  # one more epoch, not three
    assert checkpoint_epoch(tmp_path) == 2


def test_a_corrupt_shard_is_skipped_and_counted(rollouts, tmp_path):
    folder = copy_of(rollouts, tmp_path)
    (folder / "shard-90000.npz").write_bytes(b"not a zip")
    steps, report = load_steps(folder)
    assert report["skipped"] == {"empty": 0, "corrupt": 1} and report["steps"] == len(steps.step) == 20 * 13


def test_an_empty_shard_is_skipped_and_counted(rollouts, tmp_path):
    folder = copy_of(rollouts, tmp_path)
    arrays = first_shard(folder)
    np.savez(folder / "shard-90000.npz", **{k: (v if k == "meta" else v[:0]) for k, v in arrays.items()})
    steps, report = load_steps(folder)
    assert report["skipped"] == {"empty": 1, "corrupt": 0} and len(steps.step) == 20 * 13


def test_nan_features_stop_training_and_keep_the_last_good_checkpoint(rollouts, tmp_path):
    folder = copy_of(rollouts, tmp_path)
    train_critic(train_config(folder, tmp_path, epochs=2), progress=False)
    arrays = first_shard(folder)
    arrays["features"] = np.full_like(arrays["features"], np.nan)
    np.savez(folder / "shard-90001.npz", **arrays)
    with pytest.raises(FloatingPointError, match="last good checkpoint is kept"):
        train_critic(train_config(folder, tmp_path, epochs=4), progress=False)
    assert checkpoint_epoch(tmp_path) == 1


def test_critic_config_rejects_a_nonpositive_budget():
    with pytest.raises(ValueError, match="budget must be > 0, got 0"):
        CriticTrainConfig(budget=0)


@pytest.mark.parametrize(
    "convention,budget,match",
    [
        ({"guard": "latent-probe"}, 1.0, "trained with guard 'latent-probe', this run uses 'keyword'"),
        ({"guard": "keyword"}, 2.0, "trained with budget 2.0, this run uses budget=1.0"),
        ({"guard": "keyword", "cost": "increase"}, 1.0, "trained with cost rule 'increase'"),
    ],
)
def test_a_critic_for_another_guard_budget_or_cost_rule_is_refused(lm, tmp_path, convention, budget, match):
    critic = LatentCritic(CriticConfig("tiny", lm.latent_layer, "mean", lm.hidden_size, hidden=8, budget=budget,
                                       convention=convention))
    folder = critic.save(tmp_path / "c")
    ctx = RunContext(lm, CallableGuard(lambda p, r: [0.0] * len(r)), None, max_new_tokens=4, guard_spec="keyword")
    with pytest.raises(ValueError, match=match):
        make_method(f"critic-search:critic={folder}").run(PROMPTS[:1], ctx)
