"""``train.py policy``: MaskablePPO learns when to continue, resample, introspect or refuse.

The agent acts on :class:`latentguard.envs.decision_env.DecisionVectorEnv` (decisions at CARE's release points;
``num_envs`` answers decoded in one forward per token) over the train split of the labelled prompt
sets (harmful and benign requests, look-alikes and jailbreak-wrapped ones; :func:`latentguard.data.prompt_sets.labelled_records`),
with z0 drawn per answer in train mode. Every ``eval_every`` decisions the current policy answers
the dev split once, deterministically, in test mode (z0 fixed), in chunks of ``num_envs`` requests
(in this process, or on Ray actors with ``--ray``: the same answers), and the best by mean return is kept
(among the trained ones; ties go to the later: the untrained policy's evaluation only starts the
learning curve).

Written to ``out`` (default: the user cache, where ``learned-care`` finds it):

- ``policy/policy.zip`` (SB3, the best of the evaluations) and ``policy/policy.json``: the card (:func:`latentguard.agents.policy_io.policy_card`: model,
  guard, layer, pooling, actions, budget convention) and the training config, the evaluations and
  how long training took;
- ``checkpoint/`` (the latest model, the best so far and the state, one atomic folder; a rerun resumes
  from it, the timestep count kept, and refuses to if the env's options changed);
- ``tb/``: TensorBoard scalars ``charts/`` (episodic return and length, decisions per second),
  ``losses/`` (SB3's PPO losses), ``safety/`` (episode cost, share of answers over budget,
  interventions, wait tokens, refusals) and ``eval/`` (the dev evaluations);
- ``learning_curve.png``: dev return, episode cost and harmful rate against training decisions.

Every file is written atomically. The harmful rate of an evaluation is the verdict of the
``judge`` given by the caller (``train.py`` builds the validated judge): this module imports no
evaluation code.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from latentguard.agents.policy_io import card_env, check_card, default_policy_dir, load_policy, policy_card
from latentguard.common.storage import atomic_directory, atomic_write_bytes, atomic_write_json, recover_directory
from latentguard.data.attacks import prefilled_share
from latentguard.data.prompt_sets import PromptRecord, labelled_records, load_prompt_set
from latentguard.envs.decision_env import REFUSE, DecisionConfig, DecisionVectorEnv, decision_config
from latentguard.guards import make_guard
from latentguard.lm import DEFAULT_MODEL, Chat, load_lm
from latentguard.workers.pool import WorkerConfig, WorkerPool, init_ray

Judge = Callable[[list[str], list[str]], np.ndarray]
"""``judge(prompts, texts) -> (N,) bool``: answers that attempt the harm."""


@dataclass
class PolicyTrainConfig(WorkerConfig, DecisionConfig):
    """Train the learned intervention policy (MaskablePPO) on the decision env; the env's own
    options (b, N, wait price, budgets, reward, latent) are :class:`DecisionConfig`'s. With
    ``--ray`` the dev evaluations run on Ray actors (:class:`latentguard.workers.pool.WorkerConfig`); training
    itself stays in this process."""

    model: str = DEFAULT_MODEL
    """Policy model that decodes the answers."""
    guard: str = "latent-probe"
    """Guard whose checks are the decision points (the default model's probe)."""
    split: str = "train"
    """Split of the labelled prompt sets the agent trains on."""
    eval_split: str = "dev"
    """Split it is evaluated on (and the best policy chosen by)."""
    prompts: str = ""
    """Train on these prompt sets instead (comma-separated, as evaluate.py's --prompts: e.g.
    'harm:train,benign:train' or a .txt/.jsonl file); empty = the split above of every labelled set."""
    eval_prompts: str = ""
    """Evaluate on these prompt sets instead (as --prompts); empty = eval_split of every labelled set."""
    limit: int = 0
    """Train requests per set and label (0 = all)."""
    prefill_share: float = 0.0
    """Share of the train requests (harmful and benign alike, drawn by the seed) added again under
    the prefill attack: the answer starts with "Sure, here is" (:data:`latentguard.data.attacks.PREFILL`),
    compliance put in the model's mouth, so the agent meets it in training. 0 = none (the shipped
    policy's recipe); 0.5 makes about a third of the training answers prefilled."""
    eval_limit: int = 8
    """Evaluation requests per set and label (0 = all): 8 gives 40 dev requests (24 harmful, 16
    benign), about a minute per evaluation on 2 CPU cores."""
    num_envs: int = 16
    """Answers decoded together (one forward per token for all)."""
    total_timesteps: int = 4096
    """Decisions to train for (the guard's checks at which the policy acts, summed over the sub-envs)."""
    n_steps: int = 16
    """Decisions per sub-env per PPO update (num_envs * n_steps per update). PPO's clip bounds how
    far one update moves an action's probability, so an action that starts rare (refuse, below)
    needs many updates rather than many decisions per update."""
    batch_size: int = 128
    """PPO minibatch size."""
    n_epochs: int = 8
    """PPO epochs per update."""
    learning_rate: float = 1e-3
    """Adam step size: the default run has 16 updates, so each must move (PPO's clip bounds how far).
    On the tiny test env at wait price 0.01, 3e-4 had not learned in 1,024 decisions; 1e-3 had by 512."""
    gamma: float = 0.99
    """Discount per decision (an answer has about 4 to 10)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    ent_coef: float = 0.01
    """Entropy bonus (keeps the four actions tried early on)."""
    net_arch: str = "64,64"
    """Hidden sizes of the policy and value MLPs."""
    latent_features: int = 32
    """Numbers the latent is squeezed to before the MLPs, the 6 safety-state fields passed beside
    it (:class:`latentguard.agents.policy_features.LatentStateExtractor`); 0 = one MLP over the whole
    observation, where the state fields are 6 inputs among the latent's."""
    initial_refuse_logit: float = -3.0
    """Bias of ``refuse``'s logit in the untrained policy (SB3 starts every logit near 0). Before a
    flag only continue and refuse are legal, so a uniform start refuses at half of the decisions
    and answers end after one: the agent then hardly sees what continuing earns. -3 makes it ~5%
    per decision; 0 = SB3's start."""
    eval_every: int = 2048
    """Decisions between dev evaluations (and checkpoints); 0 = only at the end."""
    seed: int = 0
    """Seed of SB3, the env's draws and the answer samplers."""
    out: str = ""
    """Output folder; empty = the user cache, where learned-care finds the default policy."""
    device: str = "cpu"
    """Where the language model runs (the small policy net stays on the CPU)."""

    def __post_init__(self) -> None:
        DecisionConfig.__post_init__(self)
        self.check_workers()
        for name in ("num_envs", "total_timesteps", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.prefill_share <= 1.0:
            raise ValueError(f"prefill_share must be in [0, 1] (a share of the train requests), got {self.prefill_share}")
        if self.eval_every < 0 or self.limit < 0 or self.eval_limit < 0:
            raise ValueError("eval_every, limit and eval_limit must be >= 0")
        if self.latent_features < 0:
            raise ValueError(f"latent_features must be >= 0 (0 = no latent projection), got {self.latent_features}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        try:
            arch = [int(x) for x in self.net_arch.split(",")]
        except ValueError:
            arch = []
        if not arch or min(arch) < 1:
            raise ValueError(f"net_arch must be comma-separated positive sizes such as '64,64', got {self.net_arch!r}")


def prompt_records(sets: str, split: str, limit: int) -> list[PromptRecord]:
    """The requests of the prompt ``sets`` (comma-separated specs of :func:`latentguard.data.prompt_sets.load_prompt_set`,
    at most ``limit`` per set and label), else of ``split`` of every labelled set. None is an error
    that names where they were looked for."""
    if sets.strip():
        records = []
        for spec in (s.strip() for s in sets.split(",") if s.strip()):
            part = load_prompt_set(spec).records
            for label in dict.fromkeys(r.label for r in part):  # each label's first `limit` (0 = all)
                records += [r for r in part if r.label == label][: limit or None]
        where = f"prompt sets {sets!r}"
    else:
        records, where = labelled_records(split, limit), f"split {split!r} of the labelled sets"
    if not records:
        raise ValueError(f"no prompts in {where}: the policy has nothing to learn or be measured on; "
                         "give --prompts FILE or a split with requests (train, dev, heldout)")
    return records


def with_prefilled(records: Sequence[PromptRecord], share: float, seed: int) -> list[str]:
    """The prompts of ``records``, then a ``share`` of them (drawn by ``seed``) again under the
    prefill attack, as :class:`latentguard.lm.Chat` prompts that carry it (each answer starts with it)."""
    return [r.prompt for r in records] + [Chat([{"role": "user", "content": r.prompt}], prefill=r.prefill)
                                          for r in prefilled_share(records, share, seed)]


def _share(flags: Sequence[bool]) -> float | None:
    """Share of true flags; None for none (JSON-safe)."""
    return float(np.mean(flags)) if len(flags) else None


def policy_eval_state(config: dict, lm=None, guard=None) -> dict:
    """What a worker answers the evaluation prompts with, built once: the model (on a GPU when a
    Ray actor has one), the guard and a test-mode decision env of ``num_envs`` rows."""
    cfg = PolicyTrainConfig(**config)
    lm = lm or load_lm(cfg.model, device=cfg.worker_device(cfg.device))
    env = DecisionVectorEnv(cfg.num_envs, model=lm, prompts=["-"], guard=guard or make_guard(cfg.guard),
                            config=decision_config(cfg, mode="test"), prompt_order="once")
    return {"env": env, "policy": (None, None)}


def answer_chunk(state: dict, item: tuple[bytes, list[str], int]) -> list[dict]:
    """``item`` = (the policy as SB3 zip bytes, prompts, seed): each prompt answered once,
    deterministically, in test mode; the answers' records in prompt order. The same records
    wherever it runs: every answer is seeded by the seed and its prompt."""

    policy, prompts, seed = item
    if state["policy"][0] != policy:  # one load per policy, not per chunk
        # an in-process evaluation must leave training's random streams as they were
        state["policy"] = (policy, load_policy(policy, keep_random_state=True, device="cpu"))
    model, env = state["policy"][1], state["env"]
    env.prompts = list(prompts)
    return env.answer_all(lambda obs, masks: model.predict(obs, action_masks=masks, deterministic=True)[0], seed)


def evaluate_policy(policy: bytes, prompts: Sequence[str], harmful_request: np.ndarray, judge: Judge | None,
                    pool, chunk: int, seed: int = 0) -> dict:
    """One deterministic pass of ``policy`` (SB3 maskable policy, zip bytes) over ``prompts``, in
    chunks of ``chunk`` on ``pool`` (a :class:`latentguard.workers.pool.WorkerPool` on :func:`policy_eval_state`):
    mean return (the env's undiscounted rewards), episode cost, share over budget, interventions,
    wait tokens, refusals; the harmful rate on harmful requests by ``judge``."""
    start = time.perf_counter()
    items = [(policy, list(prompts[i : i + chunk]), seed) for i in range(0, len(prompts), chunk)]
    done = dict(pool.imap(answer_chunk, items))
    records = [r for i in range(len(items)) for r in done[i]]
    out = {"prompts": len(records), "return": float(np.mean([r["episode_return"] for r in records])),
           "episode_cost": float(np.mean([r["episode_cost"] for r in records])),
           "over_budget": float(np.mean([r["safety_state"] <= 0 for r in records])),
           "interventions": float(np.mean([r["interventions"] for r in records])),
           "wait_tokens": float(np.mean([r["wait_tokens"] for r in records])),
           "refused_harmful": _share([r["refused"] for r, h in zip(records, harmful_request) if h]),
           "refused_benign": _share([r["refused"] for r, h in zip(records, harmful_request) if not h])}
    if judge is not None and harmful_request.any():
        rows = [r for r, h in zip(records, harmful_request) if h]
        out["harmful_rate"] = float(np.mean(judge([r["prompt"] for r in rows], [r["released_text"] for r in rows])))
    out["seconds"] = time.perf_counter() - start
    return out


def plot_learning_curve(evals: Sequence[dict], path: Path, train: Sequence[dict] = ()) -> None:
    """Return, episode cost and harmful rate against training decisions, as a PNG (atomic): the
    dev evaluations (deterministic, test budget) as points, the training answers' means per PPO
    rollout (sampled actions, drawn budgets) as a line."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key, title in zip(axes, ("return", "episode_cost", "harmful_rate"),
                              ("return", "episode cost", "dev harmful rate (judge)")):
        if key != "harmful_rate" and train:
            ax.plot([t["timesteps"] for t in train], [t.get(key, np.nan) for t in train], color="0.6", label="training answers")
        ax.plot([e["timesteps"] for e in evals], [e.get(key, np.nan) for e in evals], marker="o", label="dev (test mode)")
        ax.set_title(title)
        if key == "harmful_rate":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training decisions")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def new_model(config: PolicyTrainConfig, venv):
    """An untrained MaskablePPO for ``venv`` (an SB3 vec env), seeded by ``config.seed``, whose
    ``refuse`` logit starts at ``config.initial_refuse_logit``."""
    import torch
    from sb3_contrib import MaskablePPO

    from latentguard.agents.policy_features import LatentStateExtractor

    torch.manual_seed(config.seed)
    policy_kwargs: dict = {"net_arch": [int(x) for x in config.net_arch.split(",")]}
    if config.latent_features:
        policy_kwargs.update(features_extractor_class=LatentStateExtractor,
                             features_extractor_kwargs={"latent_features": config.latent_features})
    model = MaskablePPO("MlpPolicy", venv, n_steps=config.n_steps, batch_size=config.batch_size,
                        n_epochs=config.n_epochs, learning_rate=config.learning_rate, gamma=config.gamma,
                        gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, seed=config.seed, device="cpu",
                        policy_kwargs=policy_kwargs)
    action_net = model.policy.action_net
    assert isinstance(action_net, torch.nn.Linear)  # SB3's head for a Discrete action space
    with torch.no_grad():
        action_net.bias[REFUSE] = config.initial_refuse_logit  # (4,) the logits' bias
    return model


def train_policy(config: PolicyTrainConfig, judge: Judge | None = None, progress: bool = True) -> dict:
    """Train (or resume) the policy; returns the report written to ``policy.json``."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecMonitor
    from torch.utils.tensorboard import SummaryWriter

    from latentguard.training.sb3 import SB3VecEnv

    out = Path(config.out) if config.out else default_policy_dir(config.model)
    train_prompts = with_prefilled(prompt_records(config.prompts, config.split, config.limit), config.prefill_share,
                                   config.seed)
    eval_records = prompt_records(config.eval_prompts, config.eval_split, config.eval_limit)
    lm = load_lm(config.model, device=config.device)
    guard = make_guard(config.guard)
    train_env = DecisionVectorEnv(config.num_envs, model=lm, prompts=train_prompts, guard=guard,
                                  config=decision_config(config, mode="train"), prompt_order="random")
    if config.distributed:  # reach the cluster (and check it can host the actors) before writing anything
        init_ray(config.worker_config())
    eval_pool = WorkerPool(partial(policy_eval_state, asdict(config)), config.worker_config(),  # in-process: this model and guard
                           state=None if config.distributed else policy_eval_state(asdict(config), lm, guard))
    eval_harmful = np.array([r.label == "harmful" for r in eval_records])
    card = policy_card(train_env, config.guard)
    venv = VecMonitor(SB3VecEnv(train_env), info_keywords=("episode_cost", "safety_state", "interventions",
                                                             "wait_tokens", "refused"))
    checkpoint = recover_directory(out / "checkpoint")
    saved = json.loads((checkpoint / "state.json").read_text()) if (checkpoint / "state.json").exists() else None
    if saved is not None:
        state: dict[str, Any] = saved
        check_card(state["card"], lm.model_id, config.guard, str(checkpoint))
        changed = {k: (v, card["env"].get(k)) for k, v in card_env(state["card"]).items() if card["env"].get(k) != v}
        if changed:
            raise ValueError(f"the checkpoint in {checkpoint} was trained on another decision env ("
                             + ", ".join(f"{k}={a!r}, now {b!r}" for k, a, b in ((k, *v) for k, v in changed.items()))
                             + "): rerun with its options to resume, or give another --out")
        if state.get("prefill_share", 0.0) != config.prefill_share:
            raise ValueError(f"the checkpoint in {checkpoint} was trained with prefill_share="
                             f"{state.get('prefill_share', 0.0)}, now {config.prefill_share}: rerun with it to resume, "
                             "or give another --out")
        model = load_policy(checkpoint / "model.zip", env=venv, device="cpu")
        best = (checkpoint / "best.zip").read_bytes()
    else:
        model = new_model(config, venv)
        state = {"card": card, "evals": [], "best_return": None, "seconds": 0.0, "prefill_share": config.prefill_share}
        best = b""
    model.set_logger(Logger(None, []))  # SB3's values are read below and written under losses/
    venv.seed(config.seed + model.num_timesteps)
    writer = SummaryWriter(str(out / "tb"))

    def save_checkpoint() -> None:
        """The model, the best one so far and the state, in one atomic folder."""
        with atomic_directory(checkpoint) as tmp:
            model.save(tmp / "model.zip")
            (tmp / "best.zip").write_bytes(best)
            atomic_write_json(tmp / "state.json", state)

    def evaluate_now() -> None:
        nonlocal best
        buffer = io.BytesIO()
        model.save(buffer)
        weights = buffer.getvalue()
        result = evaluate_policy(weights, [r.prompt for r in eval_records], eval_harmful, judge, eval_pool,
                                 config.num_envs, config.seed) | {"timesteps": int(model.num_timesteps)}
        state["evals"].append(result)
        for key, value in result.items():
            if value is not None:
                writer.add_scalar(f"eval/{key}", value, model.num_timesteps)
        trained = result["timesteps"] > 0  # the untrained policy starts the curve; it is no candidate
        if trained and (state["best_return"] is None or result["return"] >= state["best_return"]):  # ties: the later
            state["best_return"], state["best_timesteps"] = result["return"], result["timesteps"]
            best = weights
        if progress:
            print(f"eval at {result['timesteps']} decisions: return {result['return']:.3f}, cost {result['episode_cost']:.2f}, "
                  f"harmful {result.get('harmful_rate', float('nan')):.2f}, wait {result['wait_tokens']:.0f}, "
                  f"refused harmful/benign {result['refused_harmful'] or 0:.2f}/{result['refused_benign'] or 0:.2f}",
                  flush=True)

    class Logging(BaseCallback):
        """TensorBoard scalars under charts/, losses/, safety/; after every PPO update that crosses
        a multiple of eval_every, an evaluation and a checkpoint (of the updated weights)."""

        def __init__(self) -> None:
            super().__init__()
            self.started = time.perf_counter()
            self.seconds0 = state["seconds"]
            self.episodes: list[tuple[float, float, bool]] = []  # (return, cost, over budget) since the last update

        def _on_rollout_start(self) -> None:  # SB3 calls it after train(): the weights are the updated ones
            for key, value in model.logger.name_to_value.items():
                if key.startswith("train/"):
                    writer.add_scalar(f"losses/{key[6:]}", value, self.num_timesteps)
            self.summarise()
            last = state["evals"][-1]["timesteps"] if state["evals"] else -1
            if config.eval_every and self.num_timesteps // config.eval_every > last // config.eval_every:
                evaluate_now()
                save_checkpoint()

        def _on_training_end(self) -> None:
            self.summarise()

        def summarise(self) -> None:
            """The training answers that ended since the last summary: means in ``state["train"]``."""
            if self.episodes:
                ret, cost, over = (float(np.mean(x)) for x in zip(*self.episodes))
                state.setdefault("train", []).append({"timesteps": int(self.num_timesteps), "return": ret,
                                                      "episode_cost": cost, "over_budget": over,
                                                      "episodes": len(self.episodes)})
                self.episodes = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    t = self.num_timesteps
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], t)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], t)
                    writer.add_scalar("safety/episode_cost", info["episode_cost"], t)
                    writer.add_scalar("safety/over_budget", float(info["safety_state"] <= 0), t)
                    writer.add_scalar("safety/interventions", info["interventions"], t)
                    writer.add_scalar("safety/wait_tokens", info["wait_tokens"], t)
                    writer.add_scalar("safety/refused", float(info["refused"]), t)
                    self.episodes.append((info["episode"]["r"], info["episode_cost"], info["safety_state"] <= 0))
            state["seconds"] = self.seconds0 + time.perf_counter() - self.started
            writer.add_scalar("charts/decisions_per_second", self.num_timesteps / max(state["seconds"], 1e-9), self.num_timesteps)
            return True

    if not state["evals"]:
        evaluate_now()  # the untrained policy: where the learning curve starts
    remaining = config.total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=Logging(), reset_num_timesteps=False, progress_bar=False)
    if state["evals"][-1]["timesteps"] != model.num_timesteps:
        evaluate_now()
    save_checkpoint()
    writer.close()
    report = {"card": card, "config": asdict(config), "evals": state["evals"], "best_return": state["best_return"],
              "best_timesteps": state.get("best_timesteps"),
              "train": state.get("train", []), "train_seconds": state["seconds"], "timesteps": int(model.num_timesteps)}
    with atomic_directory(out / "policy") as tmp:
        (tmp / "policy.zip").write_bytes(best)
        atomic_write_json(tmp / "policy.json", report)
    plot_learning_curve(state["evals"], out / "learning_curve.png", state.get("train", []))
    return report
