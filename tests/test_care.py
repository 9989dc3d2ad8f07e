"""CARE: release buffer, rollback, introspection, fallbacks, the agent and the rewrite env."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from latentguard.agents.base import RunContext
from latentguard.agents.care import Care
from latentguard.agents.registry import make_method
from latentguard.common.seeding import prompt_seed
from latentguard.envs.rewrite_env import RewriteEnv, RewriteVectorEnv
from latentguard.episodes.engine import Engine
from latentguard.episodes.introspection import CRITIQUE_PROMPT, OPENING, close_hidden
from latentguard.episodes.release import ReleaseBuffer, RewriteConfig
from latentguard.guards import CallableGuard
from latentguard.lm import SamplingConfig, load_lm, row_generators, sample_steps

PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three."]
LETTER = re.compile("[A-Za-z]")  # the "known word": any ASCII letter, common in the tiny model's byte soup


def contains_word(prompts, responses):
    return [float(bool(LETTER.search(r))) for r in responses]


class FlagCalls:
    """A guard that flags exactly the calls (1-based) listed, whatever the text."""

    def __init__(self, flagged_calls):
        self.flagged, self.calls = set(flagged_calls), 0

    def __call__(self, prompts, responses):
        out = []
        for _ in responses:
            self.calls += 1
            out.append(float(self.calls in self.flagged))
        return out


@pytest.fixture()
def lm():
    return load_lm("tiny")


def ctx_for(lm, guard, tokens=60):
    return RunContext(lm, CallableGuard(guard), None, max_new_tokens=tokens)


def test_flagged_text_is_never_released_under_refuse(lm):
    care = Care(b=8, N=2, intervention="resample", fallback="refuse")
    rollouts = care.run(PROMPTS, ctx_for(lm, contains_word))
    for r in rollouts:
        shown = r.text[: -len(care.config.refusal)] if r.extra["refused"] else r.text
        assert not LETTER.search(shown)
    refused = [r for r in rollouts if r.extra["refused"]]
    assert refused and all(r.interventions >= 2 for r in refused)  # N attempts were made before refusing


def test_continue_fallback_releases_the_flagged_text(lm):
    rollouts = Care(b=8, N=1, intervention="resample", fallback="continue").run(PROMPTS, ctx_for(lm, contains_word))
    assert any(LETTER.search(r.text) for r in rollouts) and any(r.extra["fallback"] == "continue" for r in rollouts)


def test_rollback_restores_the_released_prefix_exactly(lm):
    prompt = PROMPTS[0]
    engine = Engine(lm)
    engine.start([prompt])
    buffer = ReleaseBuffer(lm, RewriteConfig(buffer=6, intervention="resample"), n=1)
    for _ in range(15):
        engine.step([int(engine.state.logits.argmax(-1))])
        buffer.passed(0, len(engine.responses[0]), final=False)  # a check that passes
    assert buffer.rows[0].released == 9
    buffer.rollback(engine, [0])
    fresh = lm.prefill(token_ids=[lm.encode_prompt(prompt) + engine.responses[0]])
    assert len(engine.responses[0]) == 9 and buffer.rows[0].discarded == 6
    torch.testing.assert_close(engine.state.logits, fresh.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("intervention", ["resample", "introspect", "phrase"])
def test_wait_tokens_are_b_times_one_plus_interventions(lm, intervention):
    b = 10  # checks at 5, 10, 15, 20...: the 4th check (at 20 tokens, 9 released) is flagged once
    care = Care(b=b, N=3, intervention=intervention, batch_size=1)
    rollout = care.run(PROMPTS[:1], ctx_for(lm, FlagCalls({4}), tokens=60))[0]
    assert rollout.interventions == 1 and rollout.released_tokens > b
    assert rollout.wait_tokens == b * (1 + rollout.interventions)


def test_an_intervention_schedule_picks_by_attempt_and_its_first_attempt_is_its_first_entry(lm):
    config = RewriteConfig(intervention="resample+introspect")
    assert [config.intervention_at(a) for a in range(4)] == ["resample", "introspect", "introspect", "introspect"]
    ctx = ctx_for(lm, contains_word, tokens=24)  # every check flags: N attempts, then the fallback
    for schedule, alone in (("resample+introspect", "resample"), ("introspect+resample", "introspect")):
        one = [r.text for r in Care(b=8, N=1, intervention=schedule, fallback="continue").run(PROMPTS, ctx)]
        assert one == [r.text for r in Care(b=8, N=1, intervention=alone, fallback="continue").run(PROMPTS, ctx)]
    both = Care(b=8, N=2, intervention="resample+introspect", fallback="continue").run(PROMPTS, ctx)
    resample = Care(b=8, N=2, intervention="resample", fallback="continue").run(PROMPTS, ctx)
    assert [r.tokens for r in both] != [r.tokens for r in resample]  # second attempts on a span splice a critique


def critique_alone(lm, query, answer, max_tokens, seed):
    """The critique written in a batch of its own (the pre-helper-row way): prefill, then sample."""
    opening = lm.tokenizer(OPENING, add_special_tokens=False).input_ids
    if len(opening) >= max_tokens:
        return opening[:max_tokens]
    state = lm.prefill(token_ids=[lm.encode_prompt(CRITIQUE_PROMPT.format(query=query, answer=answer, opening=OPENING))
                                  + opening])
    steps = sample_steps(state, max_tokens - len(opening), SamplingConfig(temperature=1.1), row_generators([seed], lm.device))
    tokens = steps[0].tolist()
    end = next((i for i, t in enumerate(tokens) if t in lm.eos_token_ids), len(tokens))
    return opening + tokens[:end]


@pytest.mark.parametrize("buffer", [12, 60])
def test_a_critique_written_beside_other_rows_equals_it_written_alone_cut_to_the_buffer(lm, buffer):
    guard = FlagCalls({1})  # the first check (row 0, after buffer/2 tokens) flags
    vec = RewriteVectorEnv(2, model=lm, prompts=PROMPTS[:2], guard=CallableGuard(guard), top_k=1,
                           max_new_tokens=buffer, buffer=buffer, prompt_order="once")
    vec.reset(seed=0)
    for _ in range(buffer // 2):
        vec.step(np.zeros(2, dtype=np.int64))
    assert vec.episodes.awaiting_rewrite().tolist() == [True, False]
    released, flagged = vec.episodes.buffer.rows[0].released, vec.episodes.text(0)
    waited = 0
    _, _, _, _, infos = vec.step(np.array([vec.INTROSPECT, 0]))
    while infos["waiting"][0]:
        _, _, _, _, infos = vec.step(np.zeros(2, dtype=np.int64))
        waited += 1
    seed = prompt_seed(0, PROMPTS[0])  # the first intervention's critique seed
    want = critique_alone(lm, PROMPTS[0], flagged, buffer, seed)
    assert vec.episodes.responses[0][released:] == want and len(want) <= buffer
    if buffer == 12:  # the opening alone is longer than 12 byte tokens: cut as in the paper, no waiting
        assert want == lm.tokenizer(OPENING, add_special_tokens=False).input_ids[:12] and waited == 0
    else:
        assert lm.decode(want).startswith(OPENING) and waited >= 1


def test_hidden_critique_stays_out_of_the_released_text(lm):
    rollouts = Care(b=40, N=1, intervention="phrase", show_critique=False, batch_size=1).run(
        PROMPTS[:1], ctx_for(lm, FlagCalls({1}), tokens=50))
    assert rollouts[0].interventions == 1 and "oh I'm sorry" not in rollouts[0].text
    shown = Care(b=40, N=1, intervention="phrase", batch_size=1).run(PROMPTS[:1], ctx_for(lm, FlagCalls({1}), tokens=50))
    assert "oh I'm sorry" in shown[0].text


def test_a_hidden_critique_is_cut_after_its_last_sentence_and_ends_a_paragraph(lm):
    ids = lm.tokenizer(OPENING + " this gives the steps. A responsible answer would", add_special_tokens=False).input_ids
    skip = len(lm.tokenizer(OPENING, add_special_tokens=False).input_ids)
    closed = close_hidden(lm, ids, skip, limit=200)
    assert lm.decode(closed) == OPENING + " this gives the steps.\n\n"


def test_a_hidden_phrase_without_a_sentence_end_gets_a_full_stop_within_the_buffer(lm):
    ids = lm.tokenizer(OPENING, add_special_tokens=False).input_ids
    assert lm.decode(close_hidden(lm, ids, len(ids), limit=200)) == OPENING + ".\n\n"
    cut = close_hidden(lm, ids, len(ids), limit=12)
    assert len(cut) <= 12 and lm.decode(cut).endswith(".\n\n")


def test_after_a_hidden_phrase_the_model_reads_it_closed_and_the_user_never_sees_it(lm):
    """Why a hidden rewrite must be closed: released text that followed an open critique would finish
    the critique's sentence (4 of 80 learned-care answers began mid-sentence)."""
    vec = RewriteVectorEnv(1, model=lm, prompts=PROMPTS[:1], guard=CallableGuard(FlagCalls({1})), top_k=1,
                           max_new_tokens=60, buffer=40, show_critique=False, prompt_order="once")
    vec.reset(seed=0)
    for _ in range(20):  # the first check (after b/2 = 20 tokens) flags
        vec.step(np.zeros(1, dtype=np.int64))
    vec.step(np.array([vec.PHRASE]))
    assert lm.decode(vec.episodes.responses[0]).startswith(OPENING + ".\n\n")
    assert vec.episodes.buffer.rows[0].hidden == [(0, len(vec.episodes.responses[0]))]


def test_guard_that_raises_fails_closed(lm):
    def broken(prompts, responses):
        raise RuntimeError("down")

    rollout = Care(b=8, N=1, fallback="refuse", batch_size=1).run(PROMPTS[:1], ctx_for(lm, broken))[0]
    assert rollout.extra["refused"] and rollout.text == "I'm sorry, but I can't help with that."


def test_care_lite_intervenes_once_then_stops_checking(lm):
    rollout = make_method("care-lite:b=8").run(PROMPTS[:1], ctx_for(lm, lambda p, r: [1.0] * len(r)))[0]
    assert rollout.interventions == 1 and rollout.guard_calls == 1 and not rollout.extra["refused"]


def test_batched_care_equals_care_one_prompt_at_a_time(lm):
    ctx = ctx_for(lm, contains_word, tokens=30)
    batched = Care(b=8, N=2, intervention="resample", batch_size=3).run(PROMPTS, ctx)
    single = Care(b=8, N=2, intervention="resample", batch_size=1).run(PROMPTS, ctx)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.interventions for r in batched] == [r.interventions for r in single]


@pytest.mark.parametrize("kwargs,match", [({"b": 1}, "buffer \\(b\\) must be >= 2"), ({"N": -1}, "max_attempts \\(N\\) must be >= 0"),
                                          ({"intervention": "pray"}, "unknown intervention 'pray'"),
                                          ({"intervention": "resample+pray"}, "unknown intervention 'pray' in 'resample\\+pray'"),
                                          ({"fallback": "shrug"}, "unknown fallback 'shrug'")])
def test_bad_care_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Care(**kwargs)


def rewrite_env(lm, guard, **kw):
    return RewriteEnv(model=lm, prompts=PROMPTS[:1], guard=CallableGuard(guard), max_new_tokens=kw.pop("tokens", 30), **kw)


def test_rewrite_env_rollback_action_crops_to_the_released_text(lm):
    env = rewrite_env(lm, FlagCalls({2}), buffer=6)
    env.reset(seed=0)
    masks = env.action_masks()
    assert masks.shape == (23,) and not masks[env.ROLLBACK]  # nothing to roll back yet
    for _ in range(6):
        _, _, _, _, info = env.step(0)
    assert info["flagged"] and len(env.episodes.responses[0]) == 6 and env.action_masks()[env.ROLLBACK]
    obs, reward, terminated, truncated, info = env.step(env.ROLLBACK)
    assert info["interventions"] == 1 and info["tokens_discarded"] == 6 and len(env.episodes.responses[0]) == 0
    fresh = lm.prefill(PROMPTS[:1])
    np.testing.assert_allclose(obs, fresh.latent(env.episodes.layer)[0], atol=1e-5)


def test_rewrite_env_requires_a_rewrite_after_a_flagged_end(lm):
    env = rewrite_env(lm, lambda p, r: [1.0] * len(r), buffer=4, max_attempts=1, tokens=3)
    env.reset(seed=0)
    for _ in range(2):
        env.step(0)
    _, _, terminated, truncated, info = env.step(0)
    assert not (terminated or truncated) and info["must_intervene"]
    assert env.action_masks()[: env.config.top_k].sum() == 0 and env.action_masks()[env.INTROSPECT]
    env.step(env.INTROSPECT)
    for _ in range(30):
        _, _, terminated, truncated, info = env.step(int(np.flatnonzero(env.action_masks())[0]))
        if terminated or truncated:
            break
    assert info["fallback"] == "refuse" and info["released_text"] == "I'm sorry, but I can't help with that."


def test_maskable_ppo_runs_on_the_rewrite_env_through_its_masks(lm):
    from sb3_contrib import MaskablePPO

    env = rewrite_env(lm, contains_word, buffer=6, max_attempts=2, tokens=12)
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64


REFERENCE = json.loads((Path(__file__).parent / "data" / "care_reference.json").read_text())
REFERENCE_PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three.", "Tell me a joke about cats."]


@pytest.mark.parametrize("spec", sorted(REFERENCE["tiny"]))
def test_care_through_the_vector_rewrite_env_releases_the_batched_rules_tokens(lm, spec):
    """The reference was recorded with the pre-engine batched CARE loop (same seed, same guard); the
    hidden-critique spec was recorded again when hidden splices began to be closed (issue 25)."""
    ctx = RunContext(lm, CallableGuard(contains_word), None, max_new_tokens=40,
                     sampling=SamplingConfig(temperature=1.0), seed=3)
    cap = 40 * (make_method(spec).config.max_attempts + 2)
    for got, want in zip(make_method(spec).run(REFERENCE_PROMPTS, ctx), REFERENCE["tiny"][spec]):
        assert (got.text, got.tokens, got.wait_tokens, got.guard_calls) == (
            want["text"], want["tokens"], want["wait_tokens"], want["guard_calls"])
        if got.tokens < cap:  # at the step cap the old loop rolled back once more, uselessly
            assert got.interventions == want["interventions"] and got.extra == want["extra"]
        else:
            assert got.interventions == want["interventions"] - 1


def test_rewrite_envs_pass_both_env_checkers_and_rewrite_in_batch(lm):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(rewrite_env(lm, contains_word, buffer=6, tokens=12), skip_render_check=True)
    sb3_check_env(rewrite_env(lm, contains_word, buffer=6, tokens=12), warn=False)
    vec = RewriteVectorEnv(3, model=lm, prompts=PROMPTS, guard=CallableGuard(contains_word), max_new_tokens=12, buffer=6)
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (3, lm.hidden_size) and vec.action_masks().shape == (3, 23)
    seen = 0
    for _ in range(30):
        masks = vec.action_masks()
        actions = np.array([int(np.flatnonzero(m)[-1]) for m in masks])  # a rewrite whenever one is legal
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert vec.observation_space.contains(obs)
        assert (infos["interventions"] <= 5).all()  # the attempt cap
        seen = max(seen, int(infos["interventions"].max()))
    assert seen >= 1



def test_a_masked_rewrite_is_replaced_by_the_most_likely_token_and_reported(lm):
    env = rewrite_env(lm, contains_word, buffer=6)
    env.reset(seed=0)
    top = int(env.candidate_ids()[0])
    _, _, _, _, info = env.step(env.INTROSPECT)  # nothing to roll back yet: masked out
    assert info["illegal_action"] and info["interventions"] == 0 and env.episodes.responses[0] == [top]


def test_an_unknown_action_is_an_error_naming_the_range(lm):
    env = rewrite_env(lm, contains_word, buffer=6)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"unknown action 23 .* 0\.\.19 \(tokens\) and 20\.\.22"):
        env.step(23)
