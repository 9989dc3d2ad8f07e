"""A guard that raises, or returns NaN or a risk outside [0, 1], is a violation in every method that
asks it (one test per method), never a silent "safe"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentguard.agents.base import RunContext
from latentguard.agents.registry import make_method
from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.envs.token_env import TokenCMDPEnv
from latentguard.guards import Guard, checked_risk
from latentguard.lm import GREEDY

PROMPT = ["Name a fruit."]
REFUSAL = "I'm sorry, but I can't help with that."


class BadGuard(Guard):
    """A guard that fails in one of three ways, straight from ``score_state`` (no checks of its own)."""

    name = "bad"
    threshold = 0.5

    def __init__(self, failure: str) -> None:
        self.failure = failure

    def score(self, prompts, responses):
        if self.failure == "raises":
            raise RuntimeError("guard server down")
        return np.full(len(prompts), np.nan if self.failure == "nan" else 1.5)


FAILURES = ["raises", "nan", "out-of-range"]


def ctx(lm, failure: str, tokens: int = 12) -> RunContext:
    return RunContext(lm, BadGuard(failure), lambda p, r: [float(len(x)) for x in r], max_new_tokens=tokens,
                      sampling=GREEDY)


@pytest.mark.parametrize("failure", FAILURES)
def test_checked_risk_fails_closed_and_says_why(failure):
    risk, error = checked_risk(BadGuard(failure), ["q", "q"], ["a", "b"])
    assert risk.tolist() == [1.0, 1.0] and error is not None


@pytest.mark.parametrize("failure", FAILURES)
def test_token_env(tiny_lm, failure):
    env = TokenCMDPEnv(model=tiny_lm, guard=BadGuard(failure), guard_every=1, max_new_tokens=4)
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["cost"] == 1.0 and info["risk"] == 1.0 and info["guard_error"]


@pytest.mark.parametrize("failure", FAILURES)
def test_care(tiny_lm, failure):
    rollout = make_method("care:b=8:N=1:batch_size=1").run(PROMPT, ctx(tiny_lm, failure))[0]
    assert rollout.extra["refused"] and rollout.text == REFUSAL


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("method", ["best-of-n:n=2", "best-of-n-lagrangian:n=2"])
def test_best_of_n(tiny_lm, failure, method):
    rollout = make_method(method).run(PROMPT, ctx(tiny_lm, failure))[0]
    assert rollout.extra["risks"] == [1.0, 1.0] and rollout.extra["all_flagged"]


@pytest.mark.parametrize("failure", FAILURES)
def test_beam_saute(tiny_lm, failure):
    rollout = make_method("beam-saute:n=2:k=1:block=4:m=1").run(PROMPT, ctx(tiny_lm, failure))[0]
    assert rollout.extra["refused"] and rollout.text == REFUSAL


@pytest.mark.parametrize("failure", FAILURES)
def test_critic_search(tiny_lm, failure, tmp_path):
    critic = LatentCritic(CriticConfig("tiny", tiny_lm.latent_layer, "mean", tiny_lm.hidden_size, hidden=8))
    torch.nn.init.zeros_(critic.safety_head.weight)
    torch.nn.init.constant_(critic.safety_head.bias, 8.0)  # the critic calls everything safe: the guard decides
    folder = critic.save(tmp_path / "critic")
    rollout = make_method(f"critic-search:critic={folder}:n=2:k=1:block=4:m=1").run(PROMPT, ctx(tiny_lm, failure))[0]
    assert rollout.extra["refused"] and rollout.text == REFUSAL
