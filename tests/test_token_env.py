"""TokenCMDPEnv: the Gymnasium contract, the cost and reward rules, and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import latentguard
from latentguard.envs.token_env import TokenCMDPEnv
from latentguard.guards import CallableGuard

PROMPTS = ["Name a fruit.", "Say hello."]


def length_risk(prompts, responses):
    """Risk grows with the response's length in characters: min(1, chars / 40)."""
    return [min(1.0, len(r) / 40) for r in responses]


def make(tiny_lm, **kwargs):
    kwargs.setdefault("prompts", PROMPTS)
    return TokenCMDPEnv(model=tiny_lm, **kwargs)


def play(env, actions=None, **reset_kwargs):
    obs, info = env.reset(**reset_kwargs)
    steps = []
    done, t = False, 0
    while not done:
        action = 0 if actions is None else actions[t]
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, info))
        done, t = terminated or truncated, t + 1
    return steps


def test_gymnasium_env_checker_passes_on_tiny(tiny_lm):
    gym_check_env(make(tiny_lm, guard="keyword", reward="repetition", max_new_tokens=6), skip_render_check=True)


def test_sb3_env_checker_passes_on_tiny(tiny_lm):
    sb3_check_env(make(tiny_lm, guard="keyword", max_new_tokens=6), warn=False)


def test_both_env_checkers_pass_on_the_default_model(default_lm):
    env = TokenCMDPEnv(model=default_lm, prompts=PROMPTS, guard="keyword", max_new_tokens=4)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_gym_make_builds_the_registered_env():
    env = gym.make("latentguard/TokenCMDP-v0", model="tiny", max_new_tokens=3)
    assert isinstance(env.unwrapped, TokenCMDPEnv)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (64,) and obs.dtype == np.float32


def test_action_zero_is_the_most_likely_token_and_obs_is_the_latent(tiny_lm):
    env = make(tiny_lm, top_k=5)
    obs, _ = env.reset(seed=0, options={"prompt": "Name a fruit."})
    fresh = tiny_lm.prefill(["Name a fruit."])
    np.testing.assert_allclose(obs, fresh.latent(env.episodes.layer)[0], atol=1e-6)
    top = torch.topk(fresh.logits[0], 5).indices.tolist()
    assert env.candidate_ids().tolist() == top
    obs, _, _, _, info = env.step(2)
    assert info["token_id"] == top[2]
    fresh.step([top[2]])
    np.testing.assert_allclose(obs, fresh.latent(env.episodes.layer)[0], atol=1e-5)


def test_prompt_is_drawn_from_the_list_with_the_seed(tiny_lm):
    env = make(tiny_lm, prompts=[f"Prompt number {i}." for i in range(10)])
    first = [env.reset(seed=s)[1]["prompt"] for s in range(6)]
    again = [env.reset(seed=s)[1]["prompt"] for s in range(6)]
    assert first == again and len(set(first)) > 1


def test_truncated_at_max_new_tokens(tiny_lm):
    steps = play(make(tiny_lm, max_new_tokens=5), seed=0)
    assert len(steps) == 5 and steps[-1][3] and not steps[-1][2]
    assert [s[4]["token_id"] for s in steps] == tiny_lm.tokenizer(steps[-1][4]["text"], add_special_tokens=False).input_ids


def test_terminated_at_end_of_sequence(tiny_lm):
    env = make(tiny_lm, top_k=tiny_lm.vocab_size, max_new_tokens=5)
    env.reset(seed=0)
    eos_action = int(np.flatnonzero(env.candidate_ids() == tiny_lm.tokenizer.eos_token_id)[0])
    _, _, terminated, truncated, info = env.step(eos_action)
    assert terminated and not truncated and info["text"] == ""


def test_flag_cost_counts_flagged_checks_every_guard_every_tokens(tiny_lm):
    guard = CallableGuard(length_risk, threshold=0.5)
    steps = play(make(tiny_lm, guard=guard, guard_every=4, max_new_tokens=10), seed=0)
    checked = [t + 1 for t, s in enumerate(steps) if "risk" in s[4]]
    assert checked == [4, 8, 10]  # every 4 tokens and at the end
    for _, _, _, _, info in steps:
        expected_risk = min(1.0, len(info["text"]) / 40)
        if "risk" in info:
            assert info["risk"] == pytest.approx(expected_risk)
            assert info["cost"] == float(expected_risk >= 0.5)
        else:
            assert info["cost"] == 0.0
    assert steps[-1][4]["episode_cost"] == sum(s[4]["cost"] for s in steps)


def test_increase_cost_telescopes_to_the_peak_risk(tiny_lm):
    guard = CallableGuard(length_risk)
    steps = play(make(tiny_lm, guard=guard, guard_every=3, cost_mode="increase", max_new_tokens=9), seed=0)
    risks = [s[4]["risk"] for s in steps if "risk" in s[4]]
    assert steps[-1][4]["episode_cost"] == pytest.approx(max(risks))
    assert steps[-1][4]["within_budget"] == (max(risks) < 1.0)  # z = 1 - episode_cost > 0


def test_guard_that_raises_fails_closed(tiny_lm):
    def broken(prompts, responses):
        raise RuntimeError("guard server down")

    env = make(tiny_lm, guard=CallableGuard(broken), guard_every=1)
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["cost"] == 1.0 and info["risk"] == 1.0
    assert info["guard_error"] == "RuntimeError: guard server down"


def test_terminal_reward_is_paid_once_at_the_end(tiny_lm):
    steps = play(make(tiny_lm, reward=lambda p, r: [float(len(x)) for x in r], max_new_tokens=6), seed=0)
    assert [s[1] for s in steps[:-1]] == [0.0] * 5
    assert steps[-1][1] == float(len(steps[-1][4]["text"]))


def test_dense_reward_sums_to_the_terminal_reward(tiny_lm):
    steps = play(make(tiny_lm, reward=lambda p, r: [float(len(x)) for x in r], reward_every=2, max_new_tokens=7), seed=0)
    chars = [len(s[4]["text"]) for s in steps]
    # paid at tokens 2, 4, 6 and at the end (7): the change in R = len(text) since the last payment
    expected = [0, chars[1], 0, chars[3] - chars[1], 0, chars[5] - chars[3], chars[6] - chars[5]]
    assert [s[1] for s in steps] == pytest.approx(expected)
    assert sum(s[1] for s in steps) == pytest.approx(chars[-1])


def test_nan_reward_is_an_error_that_names_the_reward(tiny_lm):
    def nan_reward(prompts, responses):
        return [float("nan")] * len(prompts)

    env = make(tiny_lm, reward=nan_reward, max_new_tokens=1)
    env.reset(seed=0, options={"prompt": "Say hello."})
    with pytest.raises(ValueError, match="reward 'nan_reward' returned nan for prompt 'Say hello.'"):
        env.step(0)


def test_budget_from_reset_options(tiny_lm):
    env = make(tiny_lm)
    assert env.reset(seed=0, options={"budget": 3.0})[1]["budget"] == 3.0
    with pytest.raises(ValueError, match="budget must be > 0, got -1"):
        env.reset(seed=0, options={"budget": -1})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget": 0}, "budget must be > 0, got 0"),
        ({"top_k": 0}, "top_k must be >= 1, got 0"),
        ({"top_k": 10**6}, "top_k must be <= the vocabulary size 259"),
        ({"prompts": []}, "prompts is empty"),
        ({"guard": "nosuchpkg.guards:Guard"}, "cannot import module 'nosuchpkg.guards'"),
        ({"reward": "latentguard.rewards:NoSuchReward"}, "has no attribute 'NoSuchReward'"),
        ({"reward": "helpfulness"}, "unknown reward 'helpfulness'"),
        ({"cost_mode": "sum"}, "cost_mode must be one of"),
    ],
)
def test_bad_configuration_is_named(tiny_lm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_lm, **kwargs)


def test_action_outside_the_space_or_the_mask_is_refused(tiny_lm):
    env = make(tiny_lm, top_k=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 4\), got \[7\]"):
        env.step(7)
    env.episodes.masks[0, 3] = False  # as if token 3 had zero probability
    assert env.action_masks().tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="action 3 is masked out"):
        env.step(3)


def test_step_after_the_end_asks_for_reset(tiny_lm):
    env = make(tiny_lm, max_new_tokens=1)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def test_maskable_ppo_runs_on_the_token_env_through_its_masks(tiny_lm):
    from sb3_contrib import MaskablePPO

    env = make(tiny_lm, guard="keyword", reward="repetition", max_new_tokens=8, top_k=8)
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64


def test_the_main_names_are_exported_from_envs_and_both_ids_are_registered():
    import gymnasium as gym

    from latentguard.envs.saute import SauteWrapper
    from latentguard.lm import load_lm

    assert latentguard.load_lm is load_lm and latentguard.SauteWrapper is SauteWrapper
    assert {latentguard.TOKEN_CMDP_ID, latentguard.REWRITE_ID} <= set(gym.registry)
    env = gym.make(latentguard.REWRITE_ID, model="tiny", guard="keyword", max_new_tokens=4, buffer=4)
    assert env.action_space.n == 23


def test_a_fresh_start_of_some_rows_makes_the_others_copies_without_their_own_prefill(tiny_lm, monkeypatch):
    from latentguard.episodes.token_episodes import TokenEnvConfig, TokenEpisodes

    prefilled = []
    prefill = tiny_lm.prefill
    monkeypatch.setattr(tiny_lm, "prefill", lambda token_ids: prefilled.append(len(token_ids)) or prefill(token_ids=token_ids))
    episodes = TokenEpisodes(tiny_lm, TokenEnvConfig(top_k=4, max_new_tokens=8), None, None, n=3)
    episodes.reset_rows({1: ("Name a fruit.", None)})
    assert prefilled == [1]  # one row prefilled
    assert episodes.prompts == ["Name a fruit."] * 3 and episodes.live_state.batch_size == 3
    logits = episodes.live_state.logits  # (3, V): row 1 prefilled, rows 0 and 2 copied from it
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[2], logits[1])
    with pytest.raises(ValueError, match=r"a fresh start needs one or more of the rows 0..2, got \[5\]"):
        TokenEpisodes(tiny_lm, TokenEnvConfig(top_k=4, max_new_tokens=8), None, None, n=3).reset_rows({5: ("Hi.", None)})
