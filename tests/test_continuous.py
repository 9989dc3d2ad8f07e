"""Continuous batching (Method.serve): prompts join a running batch, rows leave it at once."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import pytest
import torch

from latentguard.agents.base import PromptFeed, Rollout
from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.guards import CallableGuard
from latentguard.serving import Generator
from latentguard.serving.scheduler import Request, Scheduler

PROMPTS = ["Name a fruit.", "Say hello there.", "Count to three."]
DIGIT = re.compile("[0-9]")


def digit_guard(prompts, responses):
    """Flags an answer with a digit in it (in about a third of the tiny model's answers)."""
    return [float(bool(DIGIT.search(r))) for r in responses]


@pytest.fixture(scope="module")
def gen():
    return Generator(model="tiny", guard=CallableGuard(digit_guard, name="digit"), reward="")


class ScriptedFeed(PromptFeed):
    """Prompts that arrive at given calls of ``take`` (call number -> prompts); readers that leave
    at given calls (call number -> prompt indices). Records what the method asked and answered."""

    def __init__(self, arrivals: dict[int, list[int]], leaves: dict[int, list[int]] | None = None,
                 max_rows: int = 4) -> None:
        self.arrivals, self.leaves, self.max_rows = arrivals, leaves or {}, max_rows
        self.calls = 0
        self.asked: list[int] = []  # n of each take
        self.gone: set[int] = set()
        self.answers: dict[int, Rollout] = {}
        self.finished_at: dict[int, int] = {}  # prompt index -> take calls made when it ended
        self.texts: dict[int, str] = {}

    def take(self, n: int, idle: bool) -> list[tuple[int, str]]:
        self.asked.append(n)
        self.gone.update(self.leaves.get(self.calls, []))
        arriving = self.arrivals.get(self.calls, [])
        self.calls += 1
        assert len(arriving) <= n  # the script never offers more than the method has room for
        return [(i, PROMPTS[i]) for i in arriving]

    def cancelled(self, index: int) -> bool:
        return index in self.gone

    def released(self, index: int, text: str) -> None:
        self.texts[index] = text

    def finish(self, index: int, rollout: Rollout) -> None:
        assert index not in self.answers
        self.answers[index] = rollout
        self.finished_at[index] = self.calls


def test_a_prompt_joins_a_running_batch_and_gets_its_batch_answer(gen):
    feed = ScriptedFeed({0: [0], 3: [1, 2]})
    gen.serve(feed, "vanilla", max_new_tokens=16)
    batch = gen.generate(PROMPTS, "vanilla", max_new_tokens=16)
    assert [feed.answers[i].text for i in range(3)] == [r.text for r in batch]  # continuous changes no answer
    assert feed.finished_at[0] > 4  # prompt 0 was still decoding when 1 and 2 joined
    assert feed.asked[:5] == [4, 3, 3, 3, 1]  # room left: 4 rows, less the ones in flight


def test_a_row_whose_reader_left_is_freed_at_once(gen):
    feed = ScriptedFeed({0: [0, 1]}, leaves={3: [0]})
    gen.serve(feed, "vanilla", max_new_tokens=16)
    assert list(feed.answers) == [1]  # the one that left is never answered
    assert feed.asked[3:5] == [2, 3]  # freed at the take where it was seen gone


def test_care_takes_prompts_into_its_running_batch_and_gives_its_batch_answers(gen):
    feed = ScriptedFeed({0: [0], 3: [1, 2]})
    gen.serve(feed, "care:b=6:N=1", max_new_tokens=16)
    batch = gen.generate(PROMPTS, "care:b=6:N=1", max_new_tokens=16)
    assert [feed.answers[i].text for i in range(3)] == [r.text for r in batch]
    assert [feed.answers[i].interventions for i in range(3)] == [r.interventions for r in batch]
    assert feed.finished_at[0] > 4
    assert all(feed.texts[i].strip() in feed.answers[i].text for i in range(3))  # what was released is in the answer


@pytest.fixture(scope="module")
def critic_search(gen, tmp_path_factory):
    """A critic-search spec for the tiny model: a critic that finds every candidate safe, not confidently."""
    critic = LatentCritic(CriticConfig("tiny", gen.lm.latent_layer, "mean", gen.lm.hidden_size, hidden=8))
    torch.nn.init.zeros_(critic.safety_head.weight)
    torch.nn.init.constant_(critic.safety_head.bias, 1.0)  # P(safe) 0.73: safe, never confident
    return (f"critic-search:critic={critic.save(tmp_path_factory.mktemp('critic') / 'c')}:n=2:k=1:block=4"
            ":narrow_start=false:degenerate=0")  # two rows per prompt from the start


def test_critic_search_takes_prompts_at_its_next_block_and_gives_its_batch_answers(gen, critic_search):
    feed = ScriptedFeed({0: [0], 2: [1, 2]})
    gen.serve(feed, critic_search, max_new_tokens=16)
    batch = gen.generate(PROMPTS, critic_search, max_new_tokens=16)
    assert [feed.answers[i].text for i in range(3)] == [r.text for r in batch]  # seeded by prompt, not batch
    assert [feed.answers[i].tokens for i in range(3)] == [r.tokens for r in batch]
    assert feed.finished_at[0] > 2  # prompt 0 was still searching when 1 and 2 joined
    assert feed.asked[:3] == [4, 3, 3]  # one take per pass: room left, less the prompts in flight


def test_a_search_whose_reader_left_frees_its_rows_at_the_next_block(gen, critic_search):
    feed = ScriptedFeed({0: [0, 1], 3: [2]}, leaves={2: [0]}, max_rows=2)
    gen.serve(feed, critic_search, max_new_tokens=16)
    assert sorted(feed.answers) == [1, 2]  # the one that left is never answered
    assert feed.asked[2:4] == [0, 1]  # freed at the pass after the take where it left: room for one more
    assert [feed.answers[i].text for i in (1, 2)] == [r.text for r in gen.generate(PROMPTS[1:3], critic_search,
                                                                                    max_new_tokens=16)]


def test_a_search_takes_new_prompts_every_block():
    from latentguard.agents.registry import make_method

    assert make_method("beam-saute:block=8").joins_every == 8 and make_method("vanilla").joins_every == 1


def test_a_method_without_continuous_batching_says_so(gen):
    with pytest.raises(NotImplementedError, match="answers in whole batches"):
        gen.serve(ScriptedFeed({0: [0]}), "best-of-n:n=2", max_new_tokens=4)


@dataclass
class Recorded(Request):
    """A request whose events are kept with the time they came (no client loop needed)."""

    log: list[tuple[float, object]] = field(default_factory=list)

    def put(self, item) -> None:
        self.log.append((time.perf_counter(), item))


def test_the_scheduler_lets_a_later_request_join_the_running_batch(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=4, max_queue=8)
    scheduler.start()
    first = scheduler.submit(Recorded("Name a fruit.", "vanilla", 48, 0.7, 0.9, loop))
    while not first.log:  # the first request is decoding
        time.sleep(0.005)
    second = scheduler.submit(Recorded("Say hello there.", "vanilla", 48, 0.7, 0.9, loop))
    deadline = time.time() + 60
    while scheduler.counters.completed < 2 and time.time() < deadline:
        time.sleep(0.02)
    scheduler.stop(10)
    loop.close()
    assert first.log[-1][1] is None and second.log[-1][1] is None  # both ended
    assert second.log[0][0] < first.log[-1][0]  # the second joined while the first decoded
    assert scheduler.counters.batches == 1 and scheduler.counters.rows_in_flight == 0


def test_a_care_row_whose_reader_left_is_freed_at_once_and_its_sub_env_takes_the_next_prompt(gen):
    feed = ScriptedFeed({0: [0, 1], 5: [2]}, leaves={3: [0]}, max_rows=2)
    gen.serve(feed, "care:b=6:N=1", max_new_tokens=16)
    assert sorted(feed.answers) == [1, 2]  # the one that left is never answered
    assert feed.asked[3:5] == [0, 1]  # freed at the take where it was seen gone: room for one more
    batch = gen.generate(PROMPTS[1:3], "care:b=6:N=1", max_new_tokens=16)
    assert [feed.answers[i].text for i in (1, 2)] == [r.text for r in batch]  # the others' answers unchanged


@pytest.fixture(scope="module")
def learned_care(tmp_path_factory):
    """A learned-care spec and a generator whose guard is the one its (briefly trained) policy knows."""
    from latentguard.training.policy_training import PolicyTrainConfig, train_policy

    out = tmp_path_factory.mktemp("policy")
    guard = "tests.test_continuous:digit_guard"
    train_policy(PolicyTrainConfig(model="tiny", guard=guard, reward="coherence", buffer=4, max_new_tokens=12, limit=3,
                                   eval_limit=2, num_envs=8, total_timesteps=128, n_steps=16, batch_size=64,
                                   n_epochs=1, eval_every=0, out=str(out)), progress=False)
    return Generator(model="tiny", guard=guard, reward=""), f"learned-care:path={out / 'policy'}"


def test_learned_care_takes_prompts_into_its_running_batch_and_gives_its_batch_answers(learned_care):
    gen, spec = learned_care
    feed = ScriptedFeed({0: [0], 2: [1, 2]})
    gen.serve(feed, spec, max_new_tokens=16)
    batch = gen.generate(PROMPTS, spec, max_new_tokens=16)
    assert [feed.answers[i].text for i in range(3)] == [r.text for r in batch]  # seeded by prompt, not batch
    assert [(feed.answers[i].interventions, feed.answers[i].extra["decisions"]) for i in range(3)] == \
        [(r.interventions, r.extra["decisions"]) for r in batch]
    assert sum(r.interventions for r in batch) > 0  # the policy rewrote something: joins kept its decisions
    assert feed.finished_at[0] > 2  # prompt 0 was still decoding when 1 and 2 joined
    assert all(feed.answers[i].text.startswith(feed.texts[i]) for i in range(3))  # released text is never taken back
    assert feed.asked[:3] == [4, 3, 3]  # one take per decision step: room left, less the answers in flight
    assert gen.method(spec).joins_every == 4  # its decisions come at the guard's checks, every buffer (4 tokens)


def test_a_learned_care_answer_whose_reader_left_frees_its_sub_env_for_the_next_prompt(learned_care):
    gen, spec = learned_care
    feed = ScriptedFeed({0: [0, 1], 3: [2]}, leaves={2: [0]}, max_rows=2)
    gen.serve(feed, spec, max_new_tokens=16)
    assert sorted(feed.answers) == [1, 2]  # the one that left is never answered
    assert feed.asked[2:4] == [0, 1]  # freed at the take after the one where it left: room for one more
    batch = gen.generate(PROMPTS[1:3], spec, max_new_tokens=16)
    assert [feed.answers[i].text for i in (1, 2)] == [r.text for r in batch]  # the others' answers unchanged
