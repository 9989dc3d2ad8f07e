"""SauteWrapper follows the reference rules, checked by hand on a fixed cost sequence."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from latentguard.envs.saute import SauteWrapper
from latentguard.episodes.safety_state import scaled_budget

COSTS = [0.0, 1.0, 0.5, 2.0, 0.0]


class FixedCostEnv(gym.Env):
    """Observation [t], reward 1 per step, info['cost'] from COSTS, ends after len(COSTS) steps."""

    observation_space = gym.spaces.Box(0.0, 10.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        cost = COSTS[self.t]
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.t == len(COSTS), False, {"cost": cost}


def run(env, **reset_kwargs):
    obs, info = env.reset(seed=0, **reset_kwargs)
    zs, rewards, originals = [float(obs[-1])], [], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(0)
        zs.append(float(obs[-1]))
        assert info["safety_state"] == pytest.approx(zs[-1])
        rewards.append(reward)
        originals.append(info["original_reward"])
        done = terminated or truncated
    return zs, rewards, originals


def test_undiscounted_safety_state_and_rewards_match_hand_computation():
    env = SauteWrapper(FixedCostEnv(), budget=2.0, unsafe_reward=-5.0, max_ep_len=5)
    zs, rewards, originals = run(env)
    # z: 1 -> 1 - 0/2 = 1 -> 1 - 1/2 = 0.5 -> 0.5 - 0.5/2 = 0.25 -> 0.25 - 2/2 = -0.75 -> -0.75
    assert zs == pytest.approx([1.0, 1.0, 0.5, 0.25, -0.75, -0.75])
    assert rewards == [1.0, 1.0, 1.0, -5.0, -5.0]
    assert originals == [1.0] * 5


def test_discounted_budget_is_rescaled_and_z_divided_by_gamma():
    g, T, budget = 0.9, 5, 2.0
    d = budget * (1 - g**T) / (1 - g) / T  # = 2 * 0.40951 / 0.1 / 5 = 1.63804
    assert scaled_budget(budget, g, T) == pytest.approx(1.63804)
    env = SauteWrapper(FixedCostEnv(), budget=budget, gamma=g, max_ep_len=T, unsafe_reward=-1.0)
    zs, rewards, _ = run(env)
    expected = [1.0]
    for c in COSTS:
        expected.append((expected[-1] - c / d) / g)
    # by hand: (1 - 0)/0.9 = 1.11111, (1.11111 - 1/1.63804)/0.9 = 0.55625, 0.27890, -1.04675, -1.16305
    assert zs == pytest.approx(expected, rel=1e-6)
    assert zs[1:] == pytest.approx([1.11111, 0.55625, 0.27890, -1.04675, -1.16305], abs=1e-5)
    assert rewards == [1.0, 1.0, 1.0, -1.0, -1.0]


def test_observation_gets_z_appended_with_open_bounds():
    env = SauteWrapper(FixedCostEnv(), budget=1.0)
    assert env.observation_space.shape == (2,)
    assert env.observation_space.low.tolist() == [0.0, -np.inf]
    assert env.observation_space.high.tolist() == [10.0, np.inf]
    assert SauteWrapper(FixedCostEnv(), 1.0, use_state_augmentation=False).reset(seed=0)[0].shape == (1,)


def test_train_mode_draws_the_relative_budget_and_test_mode_fixes_it():
    train = SauteWrapper(FixedCostEnv(), 1.0, z0_min=0.5, z0_max=2.0)
    draws = [train.reset(seed=s)[0][-1] for s in range(50)]
    assert 0.5 <= min(draws) < max(draws) <= 2.0
    assert train.reset(seed=3)[0][-1] == train.reset(seed=3)[0][-1]  # seeded
    test = SauteWrapper(FixedCostEnv(), 1.0, z0_min=0.5, z0_max=2.0, z0=0.7, mode="test")
    assert [float(test.reset(seed=s)[0][-1]) for s in range(3)] == pytest.approx([0.7] * 3)


def test_budget_in_reset_options_overrides():
    env = SauteWrapper(FixedCostEnv(), budget=4.0)
    assert env.reset(options={"budget": 1.0})[0][-1] == pytest.approx(0.25)  # absolute: z0 = 1 / 4
    assert env.reset(options={"z0": 0.3})[0][-1] == pytest.approx(0.3)


def test_reward_shaping_can_be_turned_off():
    env = SauteWrapper(FixedCostEnv(), 2.0, unsafe_reward=-5.0, use_reward_shaping=False)
    assert run(env)[1] == [1.0] * 5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget": 0.0}, "budget must be > 0, got 0.0"),
        ({"budget": -1.0}, "budget must be > 0, got -1.0"),
        ({"budget": 1.0, "gamma": 0.0}, "gamma must be in"),
        ({"budget": 1.0, "z0_min": 2.0, "z0_max": 1.0}, "z0_min <= z0_max"),
        ({"budget": 1.0, "mode": "eval"}, "mode must be 'train' or 'test'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SauteWrapper(FixedCostEnv(), **kwargs)


def test_zero_budget_at_reset_is_refused():
    with pytest.raises(ValueError, match="budget given at reset must be > 0"):
        SauteWrapper(FixedCostEnv(), 1.0).reset(options={"budget": 0})


def test_env_without_cost_is_reported():
    env = SauteWrapper(gym.make("CartPole-v1"), 1.0)
    env.reset(seed=0)
    with pytest.raises(KeyError, match="needs info\\['cost'\\]"):
        env.step(0)


class CartPoleCost(gym.Wrapper):
    """CartPole with a cost of 1 whenever the cart is right of x = 0.5."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(obs[0] > 0.5)
        return obs, reward, terminated, truncated, info


def test_ppo_runs_on_a_saute_wrapped_classic_control_task():
    from stable_baselines3 import PPO

    env = SauteWrapper(CartPoleCost(gym.make("CartPole-v1")), budget=5.0, gamma=0.99, max_ep_len=500,
                       unsafe_reward=-1.0, z0_min=0.5, z0_max=1.5)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert model.observation_space.shape == (5,)
