"""TokenCMDPVectorEnv: one forward per step for all sub-envs, both autoreset modes, SB3 on top."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import latentguard  # noqa: F401
from latentguard.envs.token_env import TokenCMDPEnv
from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
from latentguard.training.sb3 import SB3VecEnv

PROMPTS = ["Name a fruit.", "Say hello.", "Count to three."]


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def test_one_forward_per_step_for_all_sub_envs(tiny_lm):
    vec = TokenCMDPVectorEnv(4, model=tiny_lm, prompts=PROMPTS, max_new_tokens=20)
    vec.reset(seed=0)
    counter = ForwardCounter(tiny_lm.model)
    for _ in range(5):
        vec.step(np.zeros(4, dtype=np.int64))
    counter.handle.remove()
    assert counter.calls == 5


def test_rows_match_the_single_env(tiny_lm):
    vec = TokenCMDPVectorEnv(3, model=tiny_lm, prompts=PROMPTS, guard="keyword", max_new_tokens=6)
    obs, _ = vec.reset(seed=0, options={"prompt": PROMPTS})
    single = TokenCMDPEnv(model=tiny_lm, prompts=PROMPTS, guard="keyword", max_new_tokens=6)
    actions = np.array([[0, 1, 2], [2, 0, 1], [1, 1, 0], [0, 0, 0]])
    vec_obs, vec_tokens = [obs], []
    for a in actions:
        obs, _, _, _, infos = vec.step(a)
        vec_obs.append(obs)
        vec_tokens.append(infos["token_id"])
    for row in range(3):
        obs, _ = single.reset(options={"prompt": PROMPTS[row]})
        np.testing.assert_allclose(obs, vec_obs[0][row], atol=1e-5)
        for t, a in enumerate(actions[:, row]):
            obs, _, _, _, info = single.step(int(a))
            np.testing.assert_allclose(obs, vec_obs[t + 1][row], atol=1e-5)
            assert info["token_id"] == vec_tokens[t][row]


def test_next_step_autoreset_resets_on_the_following_step(tiny_lm):
    vec = TokenCMDPVectorEnv(2, model=tiny_lm, prompts=PROMPTS, max_new_tokens=2)
    vec.reset(seed=0)
    vec.step(np.zeros(2, dtype=np.int64))
    _, _, term, trunc, _ = vec.step(np.zeros(2, dtype=np.int64))
    assert trunc.tolist() == [True, True]
    obs, rewards, term, trunc, infos = vec.step(np.zeros(2, dtype=np.int64))  # the reset step
    assert rewards.tolist() == [0.0, 0.0] and not term.any() and not trunc.any()
    assert infos["text"].tolist() == ["", ""] and not infos.get("_cost", np.zeros(2)).any()
    fresh = tiny_lm.prefill([infos["prompt"][0]])
    np.testing.assert_allclose(obs[0], fresh.latent(vec.episodes.layer)[0], atol=1e-5)
    _, _, _, _, infos = vec.step(np.zeros(2, dtype=np.int64))
    assert [len(t) > 0 for t in infos["text"]] == [True, True]


def test_same_step_autoreset_returns_the_reset_obs_and_the_final_one(tiny_lm):
    vec = TokenCMDPVectorEnv(2, model=tiny_lm, prompts=PROMPTS, max_new_tokens=2, autoreset_mode="SameStep",
                             guard="keyword")
    vec.reset(seed=0)
    vec.step(np.zeros(2, dtype=np.int64))
    obs, _, _, trunc, infos = vec.step(np.zeros(2, dtype=np.int64))
    assert trunc.all() and infos["final_obs"][0].shape == (64,)
    assert infos["final_info"]["text"][0] != "" and infos["text"].tolist() == ["", ""]
    fresh = tiny_lm.prefill([infos["prompt"][1]])
    np.testing.assert_allclose(obs[1], fresh.latent(vec.episodes.layer)[1 - 1], atol=1e-5)


def test_make_vec_uses_the_batched_env():
    vec = gym.make_vec("latentguard/TokenCMDP-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       model="tiny", max_new_tokens=3)
    assert isinstance(vec, TokenCMDPVectorEnv) and vec.metadata["autoreset_mode"].value == "NextStep"


def test_long_training_keeps_the_cache_bounded(tiny_lm):
    vec = TokenCMDPVectorEnv(3, model=tiny_lm, prompts=PROMPTS, max_new_tokens=5)
    vec.reset(seed=0)
    widths = []
    for _ in range(60):
        vec.step(np.zeros(3, dtype=np.int64))
        widths.append(vec.episodes.state.ids.shape[1])
    longest_prompt = max(len(tiny_lm.encode_prompt(p)) for p in PROMPTS)
    assert max(widths) <= 3 * (longest_prompt + 5)


def test_sb3_ppo_and_maskable_ppo_run_on_the_vector_env(tiny_lm):
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    venv = SB3VecEnv(TokenCMDPVectorEnv(4, model=tiny_lm, prompts=PROMPTS, guard="keyword", reward="repetition",
                                        max_new_tokens=6, top_k=8, autoreset_mode="SameStep"))
    for algo in (PPO, MaskablePPO):
        model = algo("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=64)
        assert model.num_timesteps == 64


def test_sb3_adapter_reports_the_last_step_of_an_episode(tiny_lm):
    venv = SB3VecEnv(TokenCMDPVectorEnv(2, model=tiny_lm, prompts=PROMPTS, guard="keyword", max_new_tokens=2,
                                        autoreset_mode="SameStep"))
    venv.reset()
    venv.step(np.zeros(2, dtype=np.int64))
    obs, rewards, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert dones.tolist() == [True, True]
    assert infos[0]["TimeLimit.truncated"] and infos[0]["terminal_observation"].shape == (64,)
    assert "episode_cost" in infos[0] and infos[0]["text"] != ""
    with pytest.raises(ValueError, match="SameStep"):
        SB3VecEnv(TokenCMDPVectorEnv(2, model=tiny_lm, prompts=PROMPTS))
