"""The decision env and the learned intervention policy (issue 14), on the tiny random model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from latentguard.agents.base import PromptFeed, RunContext
from latentguard.agents.learned_care import LearnedCare, confident_refusals
from latentguard.agents.registry import make_method
from latentguard.data.attacks import PREFILL
from latentguard.data.prompt_sets import PromptRecord
from latentguard.envs.decision_env import (
    ACTIONS,
    CONTINUE,
    INTROSPECT,
    REFUSE,
    RESAMPLE,
    DecisionConfig,
    DecisionEnv,
    DecisionVectorEnv,
)
from latentguard.episodes.release import REFUSAL
from latentguard.guards import CallableGuard, make_guard
from latentguard.lm import Chat, load_lm
from latentguard.training.policy_training import PolicyTrainConfig, train_policy, with_prefilled

LETTER = re.compile("[A-Za-z]")
PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three."]
GUARD = "tests.test_policy:letter_guard"


def letter_guard(prompts, responses):
    """Flags an answer with an ASCII letter in it (common in the tiny model's byte soup)."""
    return [float(bool(LETTER.search(r))) for r in responses]


DIGIT = re.compile("[0-9]")


def digit_guard(prompts, responses):
    """Flags an answer with a digit in it (in about a third of the tiny model's 12-token answers)."""
    return [float(bool(DIGIT.search(r))) for r in responses]


def answered(prompts, responses):
    """Task reward 1 for an answer that is not the refusal."""
    return [float(not r.endswith(REFUSAL)) for r in responses]


@pytest.fixture()
def lm():
    return load_lm("tiny")


def env_for(lm, guard=letter_guard, n=3, **kw):
    kw = {"buffer": 6, "max_new_tokens": 18, "reward": "coherence", "mode": "test", **kw}
    return DecisionVectorEnv(n, model=lm, prompts=PROMPTS, guard=CallableGuard(guard), prompt_order="once", **kw)


def constant(action):
    return lambda obs, masks: np.where(masks[:, action], action, CONTINUE)


def test_decision_env_passes_both_env_checkers(lm):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = DecisionEnv(model=lm, prompts=PROMPTS[:1], guard=CallableGuard(letter_guard), buffer=6, max_new_tokens=18,
                      reward="coherence")
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    assert env.observation_space.shape == (2 * lm.hidden_size + 6,) and env.action_space.n == len(ACTIONS)


def test_always_continue_releases_vanilla_tokens_at_the_same_seed(lm):
    ctx = RunContext(lm, CallableGuard(letter_guard), None, max_new_tokens=18, seed=3)
    vanilla = make_method("vanilla").run(PROMPTS, ctx)
    records = env_for(lm).answer_all(constant(CONTINUE), seed=3)
    assert [r["released_text"] for r in records] == [v.text for v in vanilla]
    assert all(r["interventions"] == 0 and not r["refused"] for r in records)
    for r in records:  # a kept flag costs 1: once a letter is in, every later check flags and is kept
        assert (r["episode_cost"] > 0) == bool(LETTER.search(r["released_text"])) and r["episode_cost"] <= r["decisions"] - 1


def test_always_resample_is_stopped_by_the_attempt_cap_and_refuses(lm):
    always = lambda prompts, responses: [1.0] * len(responses)
    records = env_for(lm, guard=always, max_attempts=2).answer_all(constant(RESAMPLE), seed=0)
    for r in records:  # N = 2 resamples of the one unsafe span, then the refuse fallback
        assert (r["interventions"], r["refused"], r["fallback"], r["released_text"]) == (2, True, "refuse", REFUSAL)
    kept = env_for(lm, max_attempts=2).answer_all(constant(RESAMPLE), seed=0)  # letters flag: some resamples pass
    for r in kept:
        shown = r["released_text"][: -len(REFUSAL)] if r["refused"] else r["released_text"]
        assert r["episode_cost"] == 0 and not LETTER.search(shown)
    assert any(not r["refused"] and r["released_text"] for r in kept)  # some resamples passed and were released


def test_saute_reward_switches_to_unsafe_reward_once_z_is_spent(lm):
    env = env_for(lm, n=1, z0=2.0, unsafe_reward=-5.0)
    env.reset(seed=0)
    steps = []  # (z after the step, reward, reward before Saute's switch, cost)
    while True:
        _, reward, terminated, _, infos = env.step(np.array([CONTINUE]))
        info = infos["final_info"] if terminated[0] else infos
        steps.append((info["safety_state"][0], reward[0], info["original_reward"][0], info["cost"][0]))
        if terminated[0]:
            break
    z = 2.0
    for z_after, reward, original, cost in steps:  # z <- z - cost / d with d = 1; -5 once z <= 0
        z -= cost
        assert z_after == z and reward == (original if z > 0 else -5.0)
    assert z <= 0 < steps[0][0] and steps[-1][1] == -5.0  # this answer keeps two flags or more


def never(prompts, responses):
    return [0.0] * len(responses)


@pytest.mark.parametrize("price_fill", [False, True])
def test_the_buffers_first_fill_is_free_unless_priced(lm, price_fill):
    env = env_for(lm, guard=never, n=1, wait_price=0.05, price_fill=price_fill)
    env.reset(seed=0)
    originals = []
    while True:
        _, _, terminated, _, infos = env.step(np.array([CONTINUE]))
        info = infos["final_info"] if terminated[0] else infos
        originals.append(info["original_reward"][0])
        if terminated[0]:
            break
    wait = info["wait_tokens"][0]
    task = env.task_reward([PROMPTS[0]], [info["released_text"][0]])[0]
    assert wait >= 6  # nothing is released before the buffer (b = 6) has filled
    priced = wait if price_fill else max(wait - 6, 0)
    assert sum(originals) == pytest.approx(task - 0.05 * priced)


def test_refuse_ends_the_answer_with_the_released_text_and_the_refusal(lm):
    records = env_for(lm).answer_all(constant(REFUSE), seed=0)
    assert [r["released_text"] for r in records] == [REFUSAL] * 3  # refused at the start: nothing was released
    assert all(r["decisions"] == 1 and r["wait_tokens"] == 0 and r["episode_cost"] == 0 for r in records)


def refuse_prompts(env, refused):
    """A policy that refuses the given prompts at their start and continues everywhere else."""
    def act(obs, masks):
        prompts = [env.episodes.prompts[r] for r in range(env.num_envs)]
        return np.array([REFUSE if p in refused and d == 0 else CONTINUE for p, d in zip(prompts, env.decisions)])
    return act


def test_a_refusal_at_the_start_gives_the_sub_env_the_next_prompt_before_any_token(lm):
    env = DecisionVectorEnv(1, model=lm, prompts=PROMPTS, guard=CallableGuard(letter_guard), prompt_order="once",
                            buffer=6, max_new_tokens=18, mode="test")
    act = refuse_prompts(env, set(PROMPTS[:2]))
    obs, _ = env.reset(seed=0)
    obs, actions, ended = env.refuse_at_start(obs, act)
    assert ended == 2 and [r["episode_index"] for r in env.completed] == [0, 1]
    assert all(r["released_text"] == REFUSAL and r["decisions"] == 1 and r["tokens"] == 0 for r in env.completed)
    assert env.episode_index.tolist() == [2] and env.decisions.tolist() == [0]  # the third prompt, not yet decided
    assert actions.tolist() == [CONTINUE] and env.episodes.responses[0] == []


def test_refusals_at_the_start_leave_the_other_answers_as_they_were(lm):
    alone = env_for(lm, n=1)
    alone.prompts = [PROMPTS[2]]
    kept = alone.answer_all(constant(CONTINUE), seed=0)[0]
    env = env_for(lm, n=1)
    records = env.answer_all(refuse_prompts(env, set(PROMPTS[:2])), seed=0)
    assert [r["released_text"] for r in records[:2]] == [REFUSAL] * 2
    assert records[2]["released_text"] == kept["released_text"] and records[2]["tokens"] == kept["tokens"]


def test_masked_rewrites_become_continue_and_are_reported(lm):
    env = env_for(lm, n=1)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [[True, False, False, True]]  # nothing unreleased at the start
    _, _, _, _, info = env.step(np.array([RESAMPLE]))
    assert info["illegal_action"][0] and info["interventions"][0] == 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("wait_price", 0.0, "wait_price must be > 0"),
    ("budget", 0.0, "budget must be > 0, got 0.0"),
    ("z0", -1.0, "z0 must be > 0, got -1.0"),
    ("z0_min", 3.0, "need 0 < z0_min <= z0_max, got z0_min=3.0 and z0_max=2.0"),
])
def test_bad_decision_options_are_named(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DecisionConfig(**{field: value})


def tiny_config(tmp_path, **kw):
    return PolicyTrainConfig(**{"model": "tiny", "guard": GUARD, "reward": "coherence", "buffer": 4, "max_new_tokens": 12,
                                "limit": 3, "eval_limit": 2, "num_envs": 8, "total_timesteps": 512, "n_steps": 16,
                                "batch_size": 64, "n_epochs": 4, "eval_every": 256, "out": str(tmp_path / "policy"), **kw})


def test_training_improves_the_return_and_writes_a_loadable_policy(tmp_path):
    config = tiny_config(tmp_path, guard="tests.test_policy:digit_guard", reward="tests.test_policy:answered",
                         total_timesteps=1024, eval_every=512, limit=8, eval_limit=8,
                         initial_refuse_logit=0.0)  # SB3's uniform start, which refuses half the time
    report = train_policy(config, progress=False)
    returns = [e["return"] for e in report["evals"]]
    assert [e["timesteps"] for e in report["evals"]] == [0, 512, 1024]
    # keeping a digit is over budget (-1), refusing pays 0, resampling a flagged span pays 1 minus the wait
    assert returns[-1] > max(returns[0] + 0.2, 0.6), returns
    folder = tmp_path / "policy" / "policy"
    card = json.loads((folder / "policy.json").read_text())["card"]
    assert card["model"] == "tiny" and card["guard"] == config.guard and card["actions"] == list(ACTIONS)
    assert (tmp_path / "policy" / "learning_curve.png").stat().st_size > 1000
    lm = load_lm("tiny")
    method = make_method(f"learned-care:path={folder}")
    rollouts = method.run(PROMPTS, RunContext(lm, make_guard(config.guard), None, max_new_tokens=12, guard_spec=config.guard))
    assert all(not DIGIT.search(r.text) for r in rollouts) and all(r.wait_tokens >= 0 for r in rollouts)


def test_training_resumes_from_its_checkpoint(tmp_path):
    first = train_policy(tiny_config(tmp_path, total_timesteps=256), progress=False)
    second = train_policy(tiny_config(tmp_path, total_timesteps=512), progress=False)
    assert second["evals"][: len(first["evals"])] == first["evals"]  # the same records, not a rerun from scratch
    assert [e["timesteps"] for e in second["evals"]] == [0, 256, 512] and second["timesteps"] == 512
    with pytest.raises(ValueError, match="trained on another decision env .*wait_price=0.03, now 0.02"):
        train_policy(tiny_config(tmp_path, total_timesteps=768, wait_price=0.02), progress=False)
    with pytest.raises(ValueError, match="trained with prefill_share=0.0, now 0.5"):
        train_policy(tiny_config(tmp_path, total_timesteps=768, prefill_share=0.5), progress=False)


def test_a_share_of_the_train_requests_is_added_again_under_the_prefill_attack():
    records = [PromptRecord(f"request {i}", "harmful" if i % 2 else "benign") for i in range(200)]
    prompts = with_prefilled(records, 0.5, seed=0)
    prefilled = prompts[200:]
    assert prompts[:200] == [r.prompt for r in records] and 80 < len(prefilled) < 120  # Binomial(200, 0.5)
    assert all(isinstance(p, Chat) and p.prefill == PREFILL and str(p) in prompts[:200] for p in prefilled)
    assert with_prefilled(records, 0.5, seed=0) == prompts and with_prefilled(records, 0.0, seed=0) == prompts[:200]


def test_a_prefilled_request_in_the_decision_env_reads_its_prefill_as_answer(lm):
    chat = Chat([{"role": "user", "content": PROMPTS[0]}], prefill=PREFILL)
    env = DecisionVectorEnv(2, model=lm, prompts=[chat, PROMPTS[1]], guard=CallableGuard(letter_guard),
                            prompt_order="once", buffer=6, max_new_tokens=18, reward="coherence", mode="test")
    env.reset(seed=0)
    forced = len(lm.encode_prompt(chat)) - len(lm.encode_prompt(PROMPTS[0]))
    assert forced > 0 and env.episodes.live_state.forced_lengths[:2].tolist() == [forced, 0]  # then helper rows


def test_a_refusal_below_the_confidence_before_any_flag_becomes_a_continue():
    probs = np.array([[0.10, 0.00, 0.00, 0.90],  # a confident refusal at the start: kept
                      [0.30, 0.00, 0.00, 0.70],  # an unsure one at the start: continue
                      [0.05, 0.15, 0.25, 0.55],  # an unsure one after a flag: the policy's own choice stands
                      [0.60, 0.10, 0.10, 0.20]])  # no refusal to question
    masks = np.array([[True, False, False, True]] * 2 + [[True] * 4] * 2)
    flagged = np.array([False, False, True, True])
    np.testing.assert_array_equal(confident_refusals(probs, masks, 0.85, flagged), [REFUSE, CONTINUE, REFUSE, CONTINUE])
    np.testing.assert_array_equal(confident_refusals(probs, masks, 0.5, flagged), [REFUSE, REFUSE, REFUSE, CONTINUE])
    with pytest.raises(ValueError, match="refuse_confidence must be a probability in \\[0, 1\\).*got 1.0"):
        LearnedCare(refuse_confidence=1.0)
    with pytest.raises(ValueError, match="with deterministic=false the policy samples"):
        LearnedCare(refuse_confidence=0.8, deterministic=False)


class FixedPolicy:
    """A policy stand-in that gives the same actions every time (SB3's ``predict`` signature)."""

    def __init__(self, actions):
        self.actions = np.asarray(actions)

    def predict(self, obs, action_masks=None, deterministic=True):
        return self.actions.copy(), None


@pytest.mark.parametrize(("rewrite", "expected"), [
    ("", [CONTINUE, RESAMPLE, INTROSPECT, REFUSE]),
    ("refuse", [CONTINUE, REFUSE, REFUSE, REFUSE]),
    ("resample", [CONTINUE, RESAMPLE, RESAMPLE, REFUSE]),
])
def test_rewrite_turns_the_policys_rollbacks_into_the_given_action(rewrite, expected):
    care = LearnedCare(rewrite=rewrite)
    care.model = FixedPolicy([CONTINUE, RESAMPLE, INTROSPECT, REFUSE])
    obs, masks = np.zeros((4, 8), dtype=np.float32), np.ones((4, 4), dtype=bool)
    np.testing.assert_array_equal(care.act(obs, masks), expected)


def test_an_unknown_rewrite_is_named():
    with pytest.raises(ValueError, match="rewrite must be one of resample, introspect, refuse .*got 'rollback'"):
        LearnedCare(rewrite="rollback")


def test_a_prefill_read_as_request_leaves_the_first_observation_as_unprefilled(lm):
    chat = Chat([{"role": "user", "content": PROMPTS[0]}], prefill=PREFILL)
    observations = {}
    for as_answer in (True, False):
        env = DecisionVectorEnv(2, model=lm, prompts=[chat, PROMPTS[0]], guard=CallableGuard(letter_guard),
                                prompt_order="once", buffer=6, max_new_tokens=18, reward="coherence", mode="test",
                                prefill_as_answer=as_answer)
        observations[as_answer] = env.reset(seed=0)[0]  # (2, F + 6): the prefilled request, its plain twin
    np.testing.assert_allclose(observations[False][0], observations[False][1], atol=1e-4)
    assert np.abs(observations[True][0] - observations[True][1]).max() > 0.1  # read as answer, the prefill shows
    np.testing.assert_allclose(observations[True][1], observations[False][1], atol=1e-6)  # no prefill: unchanged


def test_a_policy_for_another_model_or_guard_is_refused(tmp_path):
    train_policy(tiny_config(tmp_path, total_timesteps=128, eval_every=0), progress=False)
    folder = tmp_path / "policy" / "policy"
    lm = load_lm("tiny")
    with pytest.raises(ValueError, match="was trained with guard 'tests.test_policy:letter_guard', this run uses 'keyword'"):
        LearnedCare(path=str(folder)).run(PROMPTS, RunContext(lm, make_guard("keyword"), None, guard_spec="keyword"))
    report = json.loads((folder / "policy.json").read_text())
    report["card"]["model"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (folder / "policy.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="was trained on model 'HuggingFaceTB/SmolLM2-135M-Instruct', not 'tiny'"):
        LearnedCare(path=str(folder)).run(PROMPTS, RunContext(lm, make_guard(GUARD), None, guard_spec=GUARD))
    report["card"].update(model="tiny", actions=["continue", "refuse"])
    (folder / "policy.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"acts with \['continue', 'refuse'\]"):
        LearnedCare(path=str(folder)).run(PROMPTS, RunContext(lm, make_guard(GUARD), None, guard_spec=GUARD))


def test_training_with_no_prompts_is_refused(tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="prompt file .*none.txt. is empty"):
        train_policy(tiny_config(tmp_path, prompts=str(empty)), progress=False)


def test_the_untrained_policy_refuses_rarely_before_a_flag(tmp_path):
    from latentguard.training.policy_training import new_model
    from latentguard.training.sb3 import SB3VecEnv

    config = tiny_config(tmp_path)
    env = DecisionVectorEnv(8, model=load_lm("tiny"), prompts=PROMPTS, guard=CallableGuard(letter_guard),
                            buffer=4, max_new_tokens=12, reward="coherence")
    venv = SB3VecEnv(env)
    obs = venv.reset()
    masks = env.action_masks()
    assert not masks[:, RESAMPLE].any()  # at the start only continue and refuse are legal
    model = new_model(config, venv)
    probs = model.policy.get_distribution(torch.as_tensor(obs), action_masks=masks).distribution.probs  # (8, 4)
    expected = np.exp(config.initial_refuse_logit) / (1 + np.exp(config.initial_refuse_logit))  # logistic(-3) = 0.047
    np.testing.assert_allclose(probs[:, REFUSE].detach().numpy(), expected, atol=0.01)


def test_the_policy_net_sees_the_safety_state_unchanged_beside_a_squeezed_latent():
    import gymnasium as gym

    from latentguard.agents.policy_features import LatentStateExtractor

    extractor = LatentStateExtractor(gym.spaces.Box(-np.inf, np.inf, (20 + 6,), np.float32), latent_features=4)
    obs = torch.randn(3, 26)  # (B, F + 6)
    features = extractor(obs)  # (3, 4 + 6)
    assert features.shape == (3, 10) and extractor.features_dim == 10
    torch.testing.assert_close(features[:, 4:], obs[:, 20:])  # z, risk, fill, attempts, progress, flagged
    assert features[:, :4].abs().max() < 1  # tanh
    expected = torch.tanh(extractor.project[1](torch.nn.functional.layer_norm(obs[:, :20], (20,),
                                                                              extractor.project[0].weight, extractor.project[0].bias)))
    torch.testing.assert_close(features[:, :4], expected)


def test_a_trained_policy_uses_the_latent_projection_by_default_and_a_plain_mlp_at_zero(tmp_path):
    from latentguard.agents.policy_features import LatentStateExtractor
    from latentguard.training.policy_training import new_model
    from latentguard.training.sb3 import SB3VecEnv

    venv = SB3VecEnv(DecisionVectorEnv(2, model=load_lm("tiny"), prompts=PROMPTS, guard=CallableGuard(letter_guard),
                                       buffer=4, max_new_tokens=12, reward="coherence"))
    projected = new_model(tiny_config(tmp_path), venv).policy.features_extractor
    assert isinstance(projected, LatentStateExtractor) and projected.features_dim == 32 + 6
    plain = new_model(tiny_config(tmp_path, latent_features=0), venv).policy.features_extractor
    assert not isinstance(plain, LatentStateExtractor) and plain.features_dim == venv.observation_space.shape[0]
    with pytest.raises(ValueError, match="latent_features must be >= 0 .*got -1"):
        tiny_config(tmp_path, latent_features=-1)


def test_the_user_cache_policy_wins_over_the_shipped_one(tmp_path, monkeypatch):
    import shutil

    from latentguard.agents import pretrained
    from latentguard.agents.policy_io import default_policy_dir

    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "shipped")
    cached = default_policy_dir("tiny") / "policy"
    assert pretrained.resolve_policy_dir("tiny") == cached  # neither: the error names the cache
    with pytest.raises(FileNotFoundError, match="run python train.py policy --model tiny first"):
        pretrained.export("tiny")
    train_policy(tiny_config(tmp_path, total_timesteps=128, eval_every=0, out=str(cached.parent)), progress=False)
    shipped = pretrained.export("tiny")
    assert shipped == tmp_path / "shipped" / "tiny" and pretrained.resolve_policy_dir("tiny") == cached
    assert (shipped / "policy.zip").read_bytes() == (cached / "policy.zip").read_bytes()
    shutil.rmtree(cached)
    assert pretrained.resolve_policy_dir("tiny") == shipped
    rollouts = make_method("learned-care").run(PROMPTS, RunContext(load_lm("tiny"), make_guard(GUARD), None,
                                                                   max_new_tokens=12, guard_spec=GUARD))
    assert [r.prompt for r in rollouts] == PROMPTS and all(r.text for r in rollouts)


@pytest.fixture(scope="module")
def refusing_policy(tmp_path_factory):
    """A policy folder whose refusal starts at logistic(3) = 0.95 before any token (one short update)."""
    out = tmp_path_factory.mktemp("refusing")
    train_policy(tiny_config(out, total_timesteps=128, eval_every=0, initial_refuse_logit=3.0), progress=False)
    return out / "policy" / "policy"


def gate_ctx(lm):
    return RunContext(lm, make_guard(GUARD), lambda p, r: [float(len(x)) for x in r], max_new_tokens=8,
                      guard_spec=GUARD)


def test_the_policy_gives_its_first_decision_refusal_per_prompt(refusing_policy):
    lm = load_lm("tiny")
    method = LearnedCare(path=str(refusing_policy), batch_size=2)
    method.prepare(gate_ctx(lm))
    p = method.first_refusal(PROMPTS, gate_ctx(lm))  # two batches: 2 + 1 prompts
    assert p.shape == (3,) and np.all((p > 0.85) & (p < 0.99)), p  # logistic(3) = 0.953, moved by one update
    vec = method.env(PROMPTS, gate_ctx(lm), num_envs=3)
    obs, _ = vec.reset(seed=0)
    probs = method.model.policy.get_distribution(torch.as_tensor(obs), action_masks=vec.action_masks()).distribution.probs
    np.testing.assert_allclose(p, probs[:, REFUSE].detach().numpy(), atol=1e-5)  # the same as one batch of three


def test_a_gated_search_refuses_before_any_token_where_the_policy_would(refusing_policy):
    lm = load_lm("tiny")
    spec = "beam-saute:n=2:k=1:block=4"
    plain = make_method(spec).run(PROMPTS, gate_ctx(lm))
    gated = make_method(f"{spec}:gate=0.5:gate_policy={refusing_policy}").run(PROMPTS, gate_ctx(lm))
    assert [r.text for r in gated] == [REFUSAL] * 3 and [r.tokens for r in gated] == [0] * 3
    assert all(r.extra["gated"] and r.extra["refused"] for r in gated)
    above = make_method(f"{spec}:gate=0.99:gate_policy={refusing_policy}").run(PROMPTS, gate_ctx(lm))
    assert [r.text for r in above] == [r.text for r in plain] and not any(r.extra["gated"] for r in above)


def test_a_gate_policy_without_a_gate_is_named():
    with pytest.raises(ValueError, match="gate_policy='x' names the policy of a policy gate: give gate=p too"):
        make_method("critic-search:gate_policy=x")
    with pytest.raises(ValueError, match="gate_policy='x' names the policy of a policy gate"):
        make_method("critic-search:gate=request:gate_policy=x")
    with pytest.raises(ValueError, match=r"gate must be 'request' .* or a probability in \[0, 1\)"):
        make_method("critic-search:gate=1")


class ListFeed(PromptFeed):
    """A server's feed whose prompts all wait from the start; it keeps how many it was asked for at
    each take and the answers."""

    def __init__(self, prompts, max_rows):
        self.max_rows = max_rows
        self.waiting, self.asked, self.answers = list(enumerate(prompts)), [], {}

    def take(self, n, idle):
        self.asked.append(n)
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        return taken

    def finish(self, index, rollout):
        self.answers[index] = rollout


def test_a_served_search_answers_gated_requests_at_once_and_takes_the_next(refusing_policy):
    feed = ListFeed(PROMPTS, max_rows=2)
    lm = load_lm("tiny")
    make_method(f"beam-saute:n=2:k=1:block=4:gate=0.5:gate_policy={refusing_policy}").serve(feed, gate_ctx(lm))
    assert sorted(feed.answers) == [0, 1, 2] and all(r.text == REFUSAL and r.extra["gated"] for r in feed.answers.values())
    assert feed.asked == [2, 2, 2]  # three takes in the first pass: each refused pair left room for two more
