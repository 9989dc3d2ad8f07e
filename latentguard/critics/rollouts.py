"""``train.py collect``: base-model rollouts through the token vector env (a face of the episode
engine), saved as shards.

The behaviour policy is the base model itself: at each step an action is sampled from the top-k
candidates with probabilities ``softmax(logprob / temperature)``. The guard (default: the latent
probe) puts a cost on the env's checks (``cost_mode="flag"``: 1 per flagged check, every
``guard_every`` tokens and at the end); the reward function (default: relevance) pays at the end.

Per step the shard keeps what a latent critic reads and learns from: the features of the prefix
(``layer``'s hidden states pooled by ``pooling``, :meth:`DecodeState.features`: by default the
mean over the response so far beside the request's last prompt token), the cost so far and the
step; per episode the final cost, the reward, the prompt and its label. Prompts are the train split
of the labelled sets (AdvBench, harm, benign, jailbreak: the ones the guard learns from),
``samples`` episodes each. The jobs are cut into fixed shards of ``shard_episodes`` (shard ``k`` holds
jobs ``k*S`` to ``(k+1)*S - 1``), each decoded on its own, its sampler and env seeded by the run
seed and ``k``: so a shard is the same whether it runs in-process or on a Ray actor
(``--ray``, :mod:`latentguard.workers.pool`), and in whatever order. Each shard is written atomically when it
is done; a rerun skips the shards that hold their jobs, so an interrupted collection resumes (an
actor that dies loses only the shard it held). ``manifest.json`` records the settings.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from latentguard.common.storage import atomic_write_bytes, atomic_write_json, slug, user_cache_dir
from latentguard.data.prompt_sets import PromptRecord, labelled_records
from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
from latentguard.guards import make_guard
from latentguard.lm import DEFAULT_MODEL, FEATURE_POOLINGS, load_lm
from latentguard.workers.pool import WorkerConfig, WorkerPool, init_ray


@dataclass
class RolloutConfig(WorkerConfig):
    """Collect base-model rollouts for critic training (in-process, or on Ray actors with ``--ray``)."""

    model: str = DEFAULT_MODEL
    """Policy model spec."""
    guard: str = "latent-probe"
    """Cost model: the guard whose flagged checks cost 1."""
    reward: str = "relevance"
    """Task reward paid at the end of an episode."""
    out: str = ""
    """Shard folder; empty = <cache>/critics/<model>/rollouts."""
    samples: int = 1
    """Episodes per training prompt."""
    max_new_tokens: int = 64
    """Episode length at most."""
    guard_every: int = 8
    """Guard check period in tokens (and at the end)."""
    top_k: int = 20
    """Candidates the behaviour policy samples from."""
    temperature: float = 0.7
    """Temperature of the behaviour policy over the top-k candidates."""
    layer: int = -1
    """Feature layer (hidden-state index); -1 = the model's default latent layer (the middle)."""
    pooling: str = "mean+request"
    """Features (:data:`latentguard.lm.FEATURE_POOLINGS`): 'mean+request' (default: the answer so far and
    the request, both free during decoding; the guard whose cost the critic predicts reads the
    request too), 'mean' over the response so far, 'last' token or 'request'."""
    num_envs: int = 32
    """Sub-environments decoded as one batch."""
    shard_episodes: int = 64
    """Finished episodes per shard."""
    limit: int = 0
    """Use at most this many prompts per label (0 = all; for smoke tests)."""
    seed: int = 0
    """Seed of the behaviour policy."""
    device: str = "cpu"
    """Where the policy runs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in FEATURE_POOLINGS:
            raise ValueError(f"pooling must be one of {FEATURE_POOLINGS}, got {self.pooling!r}")
        for name in ("samples", "max_new_tokens", "num_envs", "shard_episodes", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def default_rollout_dir(model_id: str) -> Path:
    return user_cache_dir() / "critics" / slug(model_id) / "rollouts"


def training_records(limit: int = 0) -> list[PromptRecord]:
    """Train-split requests of every labelled set (AdvBench, harm, benign, jailbreak), in a fixed
    (hash) order: the same requests the guard learns from (:func:`latentguard.data.prompt_sets.labelled_records`)."""
    return labelled_records("train", limit)


def _save_shard(path: Path, episodes: list[dict]) -> None:
    steps = [s for e in episodes for s in e["steps"]]
    arrays: dict[str, np.ndarray] = {
        "features": np.stack([s[0] for s in steps]).astype(np.float16),  # (S, H)
        "cost_so_far": np.array([s[1] for s in steps], np.float32),  # (S,)
        "step": np.array([s[2] for s in steps], np.int32),  # (S,)
        "episode": np.repeat(np.arange(len(episodes)), [len(e["steps"]) for e in episodes]).astype(np.int32),
        "final_cost": np.array([e["final_cost"] for e in episodes], np.float32),
        "reward": np.array([e["reward"] for e in episodes], np.float32),
        "job": np.array([e["job"] for e in episodes], np.int64),
    }
    meta = [{k: e[k] for k in ("prompt", "label", "text", "length")} for e in episodes]
    buf = io.BytesIO()
    # numpy's stub: mypy matches **arrays against savez's allow_pickle: bool
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def shard_jobs(folder: Path, index: int) -> list[int] | None:
    """The job indices of shard ``index`` in ``folder``; None if it is missing or unreadable."""
    path = folder / f"shard-{index:05d}.npz"
    try:
        with np.load(path) as data:
            return [int(j) for j in data["job"]]
    except Exception:
        return None


def rollout_worker_state(config: dict, lm=None, guard=None) -> dict:
    """What a collector decodes with, built once per worker: the model (on a GPU when a Ray actor
    has one), its feature layer, the guard."""
    cfg = RolloutConfig(**config)
    lm = lm or load_lm(cfg.model, device=cfg.worker_device(cfg.device))
    layer = lm.latent_layer if cfg.layer == -1 else lm.normalise_layer(cfg.layer)
    lm.capture_layer(layer, history=cfg.pooling != "last")
    return {"lm": lm, "layer": layer, "guard": make_guard(guard or cfg.guard), "config": cfg}  # one guard for every shard


def collect_rollouts(config: RolloutConfig, lm=None, guard=None, progress: bool = True) -> Path:
    """Run the collection (see the module docstring); returns the shard folder.

    ``lm`` and ``guard`` may be given as objects instead of ``config.model`` / ``config.guard``
    (in-process only: Ray actors load their own from the config).
    """
    if config.distributed and (lm is not None or guard is not None):
        raise ValueError("with --ray every actor loads its own model and guard from the config: pass specs, not objects")
    if config.distributed:  # reach the cluster (and check it can host the actors) before writing anything
        init_ray(config.worker_config())
    setup = partial(rollout_worker_state, asdict(config))
    pool = WorkerPool(setup, config.worker_config(), state=None if config.distributed else setup(lm, guard))
    if not config.distributed:  # in-process: this model and guard
        lm = pool.state["lm"]
        model_id, layer, hidden = lm.model_id, pool.state["layer"], lm.hidden_size
    else:
        from latentguard.lm.loading import resolve_model

        model_id, layer, hidden = resolve_model(config.model).model_id, config.layer, None  # the actors report the rest
    folder = Path(config.out) if config.out else default_rollout_dir(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    records = training_records(config.limit)
    jobs = [(i, r) for i, r in enumerate(r for r in records for _ in range(config.samples))]
    shards = [jobs[i : i + config.shard_episodes] for i in range(0, len(jobs), config.shard_episodes)]
    todo = [(k, shard) for k, shard in enumerate(shards) if shard_jobs(folder, k) != [i for i, _ in shard]]

    def write_manifest() -> None:
        atomic_write_json(folder / "manifest.json", {
            "config": asdict(config), "model": model_id, "layer": layer, "hidden_size": hidden, "jobs": len(jobs),
            "shards": len(shards), "budget_convention": {"cost": "flag", "guard_every": config.guard_every}})

    if hidden is not None:
        write_manifest()
    for index, (episodes, shard_layer, shard_hidden) in pool.imap(collect_shard, todo):  # each shard written when done
        layer, hidden = shard_layer, shard_hidden  # on Ray only the actors know them: the manifest records them
        _save_shard(folder / f"shard-{todo[index][0]:05d}.npz", episodes)
        write_manifest()
        if progress:
            print(f"rollouts: shard {todo[index][0] + 1}/{len(shards)} ({len(episodes)} episodes)", flush=True)
    pool.close()
    return folder


def collect_shard(state: dict, item: tuple[int, list]) -> tuple[list[dict], int, int]:
    """Decode one shard's jobs (``item`` = (shard index, [(job, record)])): the same episodes
    wherever it runs, as its sampler and env are seeded by the run seed and the shard index.
    Returns the episodes (in job order), the feature layer and the hidden size."""
    shard, todo = item
    config, lm, layer = state["config"], state["lm"], state["layer"]
    n_env = min(config.num_envs, len(todo))
    vec = TokenCMDPVectorEnv(n_env, model=lm, prompts=[r.prompt for _, r in todo], guard=state["guard"],
                             reward=config.reward, top_k=config.top_k, max_new_tokens=config.max_new_tokens,
                             guard_every=config.guard_every, cost_mode="flag", latent_layer=layer, prompt_order="cycle")
    rng = np.random.default_rng([config.seed, shard])
    done: list[dict] = []
    running = {}  # env row -> episode being recorded
    vec.reset(seed=int(rng.integers(2**31)))
    for row in range(n_env):
        running[row] = _new_episode(todo, row, vec, layer, config.pooling)
    while running:
        logits = vec.candidate_logprobs() / max(config.temperature, 1e-6)  # (n, k)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        actions = np.array([rng.choice(probs.shape[1], p=p) for p in probs])
        _, rewards, terminated, truncated, infos = vec.step(actions)
        feats = _features(vec, layer, config.pooling)
        stepped = infos.get("_cost", np.zeros(n_env, bool))  # rows that took a step (not a reset)
        ended = []
        for row, ep in running.items():
            if ep is None:  # past the end of the job list: nothing to record
                continue
            if not stepped[row]:  # this step restarted the row on this episode's prompt
                ep["steps"].append((feats[row], 0.0, 0))
                continue
            ep["steps"].append((feats[row], float(infos["episode_cost"][row]), len(vec.episodes.responses[row])))
            if terminated[row] or truncated[row]:
                ep.update(final_cost=float(infos["episode_cost"][row]), reward=float(rewards[row]),
                          text=str(infos["text"][row]), length=len(vec.episodes.responses[row]))
                done.append(ep)
                ended.append(row)
        for i, row in enumerate(sorted(ended)):  # they restart next step, in row order, on the next jobs
            running[row] = _queued(todo, vec.prompts_started + i)
        if all(v is None for v in running.values()):
            break
    done.sort(key=lambda e: e["job"])
    return done, layer, lm.hidden_size


def _queued(todo, index: int) -> dict | None:
    if index >= len(todo):
        return None
    job, record = todo[index]
    return {"job": job, "prompt": record.prompt, "label": record.label, "steps": []}


def _new_episode(todo, row: int, vec, layer: int, pooling: str) -> dict | None:
    episode = _queued(todo, row)
    if episode is not None:
        episode["steps"].append((_features(vec, layer, pooling)[row], 0.0, 0))
    return episode


def _features(vec, layer: int, pooling: str) -> np.ndarray:
    return vec.episodes.features(layer, pooling)
