"""``train.py critic``: fit a :class:`~latentguard.critics.critic.LatentCritic` on collected rollouts.

Targets (all detached), per step ``t`` of an episode with final cost ``C_T`` and reward ``R``, for
a relative budget ``z0`` drawn uniformly in ``[z0_min, z0_max]`` for every sample (Saute's budget
randomisation, done by relabelling: the behaviour policy never saw ``z``):

- safety state ``z_t = z0 - C_t / d``; Monte-Carlo label ``1[z0 - C_T / d > 0]``; TD target
  ``P_safe(h_{t+1}, z_{t+1})`` from the current network, detached (the label itself at the last
  step); the safety head fits ``td_lambda * TD + (1 - td_lambda) * MC`` with binary cross-entropy;
- value: Monte-Carlo ``R``, TD ``V(h_{t+1})`` (``R`` at the last step), same mix, squared error.

Episodes are split into train and validation by prompt (20% of prompts held out). TensorBoard:
``losses/safety``, ``losses/value``, ``eval/auroc_8|16|32`` (safety head on held-out prompts at
those prefix lengths, ``z0 = 1``), ``eval/value_mae``, ``safety/safe_rate`` (in ``<critic folder>-tb``). A checkpoint (weights,
optimiser, epoch) is written atomically after every epoch and a rerun resumes from it; a NaN loss
stops training with a message and leaves the last good checkpoint in place. Empty or corrupt
shards are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latentguard.common.metrics import safe_auroc
from latentguard.common.storage import atomic_directory, atomic_write_json, slug, user_cache_dir
from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.critics.rollouts import default_rollout_dir
from latentguard.episodes.safety_state import BudgetConvention, after_cost, within_budget
from latentguard.lm import DEFAULT_MODEL

PREFIXES = (8, 16, 32)


@dataclass
class CriticTrainConfig:
    """Train a latent critic on collected rollouts."""

    model: str = DEFAULT_MODEL
    """Policy model id the rollouts came from."""
    rollouts: str = ""
    """Shard folder; empty = <cache>/critics/<model>/rollouts."""
    out: str = ""
    """Critic folder; empty = <cache>/critics/<model>/critic (where critic-search looks)."""
    epochs: int = 8
    """Passes over the training steps."""
    batch_size: int = 512
    """Steps per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    hidden: int = 256
    """Width of the critic's MLP."""
    td_lambda: float = 0.5
    """Weight of the TD target against the Monte-Carlo one."""
    budget: float = 1.0
    """d: cost units per unit of z."""
    z0_min: float = 0.5
    """Smallest relative budget drawn when relabelling."""
    z0_max: float = 2.0
    """Largest relative budget drawn when relabelling."""
    seed: int = 0
    """Seed of shuffling, budgets and initialisation."""

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise ValueError(f"budget must be > 0, got {self.budget}")
        if not 0 < self.z0_min <= self.z0_max:
            raise ValueError(f"need 0 < z0_min <= z0_max, got {self.z0_min}, {self.z0_max}")
        if not 0 <= self.td_lambda <= 1:
            raise ValueError(f"td_lambda must be in [0, 1], got {self.td_lambda}")
        for name in ("epochs", "batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def default_critic_dir(model_id: str) -> Path:
    return user_cache_dir() / "critics" / slug(model_id) / "critic"


@dataclass
class Steps:
    """Flattened rollout steps with their next step and episode outcome."""

    features: np.ndarray  # (S, H) float32
    cost: np.ndarray  # (S,) cost so far
    next_index: np.ndarray  # (S,) index of the next step, -1 at an episode's last step
    step: np.ndarray  # (S,)
    final_cost: np.ndarray  # (S,)
    reward: np.ndarray  # (S,)
    prompts: list[str]  # (S,)


def load_steps(folder: Path) -> tuple[Steps, dict]:
    """All readable shards of ``folder``; returns the steps and a report of skipped shards."""
    parts, skipped = [], {"empty": 0, "corrupt": 0}
    for path in sorted(folder.glob("shard-*.npz")):
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in ("features", "cost_so_far", "step", "episode", "final_cost", "reward")}
        except Exception:
            skipped["corrupt"] += 1
            continue
        if len(arrays["step"]) == 0 or len(meta) == 0:
            skipped["empty"] += 1
            continue
        parts.append((arrays, meta))
    if not parts:
        raise FileNotFoundError(f"no readable rollout shards in {str(folder)!r} ({skipped}); "
                                "collect them first with: python train.py collect")
    feats, cost, nxt, step, final, reward, prompts = [], [], [], [], [], [], []
    offset = 0
    for arrays, meta in parts:
        ep = arrays["episode"]
        n = len(ep)
        last = np.r_[ep[1:] != ep[:-1], True]  # last step of each episode
        nxt.append(np.where(last, -1, np.arange(n) + 1 + offset))
        feats.append(arrays["features"].astype(np.float32))
        cost.append(arrays["cost_so_far"])
        step.append(arrays["step"])
        final.append(arrays["final_cost"][ep])
        reward.append(arrays["reward"][ep])
        prompts += [meta[i]["prompt"] for i in ep]
        offset += n
    steps = Steps(np.concatenate(feats), np.concatenate(cost), np.concatenate(nxt), np.concatenate(step),
                  np.concatenate(final), np.concatenate(reward), prompts)
    return steps, {"shards": len(parts), "skipped": skipped, "steps": len(steps.step)}


def held_out(prompt: str) -> bool:
    """20% of prompts, by hash, are kept for validation."""
    return int(hashlib.sha256(("critic|" + prompt).encode()).hexdigest()[:8], 16) % 5 == 0


def _targets(critic, s: Steps, idx: np.ndarray, z0: np.ndarray, cfg: CriticTrainConfig, device):
    d = cfg.budget
    h = torch.as_tensor(s.features[idx], device=device)
    z = torch.as_tensor(after_cost(z0, s.cost[idx], d), device=device)
    mc_safe = torch.as_tensor(within_budget(after_cost(z0, s.final_cost[idx], d)).astype(np.float32), device=device)
    reward = torch.as_tensor(s.reward[idx], device=device)
    nxt = s.next_index[idx]
    has_next = nxt >= 0
    td_safe, td_value = mc_safe.clone(), reward.clone()
    if has_next.any():
        with torch.no_grad():  # targets are detached
            n_idx = nxt[has_next]
            hn = torch.as_tensor(s.features[n_idx], device=device)
            zn = torch.as_tensor(after_cost(z0[has_next], s.cost[n_idx], d), device=device)
            logit_n, value_n = critic(hn, zn)
            mask = torch.as_tensor(has_next, device=device)
            td_safe[mask] = torch.sigmoid(logit_n)
            td_value[mask] = value_n
    lam = cfg.td_lambda
    return h, z, lam * td_safe + (1 - lam) * mc_safe, lam * td_value + (1 - lam) * reward


def evaluate_critic(critic: LatentCritic, s: Steps, idx: np.ndarray, budget: float) -> dict:
    """Safety AUROC at prefix lengths (z0 = 1) and value MAE on the given steps."""
    out = {}
    with torch.no_grad():
        p_t, v_t = critic.predict(torch.as_tensor(s.features[idx]),
                                  torch.as_tensor(after_cost(1.0, s.cost[idx], budget)))
    p, v = p_t.cpu().numpy(), v_t.cpu().numpy()
    safe = within_budget(after_cost(1.0, s.final_cost[idx], budget)).astype(int)
    for t in PREFIXES:
        at = s.step[idx] == t
        out[f"auroc_{t}"] = safe_auroc(safe[at], p[at])
    out["auroc_all"] = safe_auroc(safe, p)
    out["value_mae"] = float(np.abs(v - s.reward[idx]).mean())
    out["safe_rate"] = float(safe.mean())
    out["steps"] = len(idx)
    return out


def train_critic(config: CriticTrainConfig, model_id: str | None = None, progress: bool = True):
    """Train (or resume) the critic; returns ``(critic, metrics)``."""
    from torch.utils.tensorboard import SummaryWriter

    rollouts = Path(config.rollouts) if config.rollouts else default_rollout_dir(model_id or config.model)
    manifest = json.loads((rollouts / "manifest.json").read_text()) if (rollouts / "manifest.json").exists() else {}
    steps, data_report = load_steps(rollouts)
    out = Path(config.out) if config.out else default_critic_dir(manifest.get("model", model_id or config.model))
    val = np.array([held_out(p) for p in steps.prompts])
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    rcfg = manifest.get("config", {})
    critic_cfg = CriticConfig(
        model_id=manifest.get("model", config.model), layer=int(manifest.get("layer", -1)),
        pooling=rcfg.get("pooling", "mean"), latent_size=steps.features.shape[1], hidden=config.hidden,
        budget=config.budget,
        convention=BudgetConvention(config.budget, 1.0, "flag", rcfg.get("guard")).record()
        | {"guard_every": rcfg.get("guard_every"), "z0_range": [config.z0_min, config.z0_max]},
    )
    torch.manual_seed(config.seed)
    critic = LatentCritic(critic_cfg)
    critic.feature_mean.copy_(torch.as_tensor(steps.features[train_idx].mean(0)))
    critic.feature_std.copy_(torch.as_tensor(steps.features[train_idx].std(0) + 1e-4))
    optimiser = torch.optim.Adam(critic.parameters(), lr=config.lr)
    checkpoint = out.parent / f"{out.name}-checkpoint"
    start_epoch = 0
    if (checkpoint / "state.pt").exists():
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        critic.load_state_dict(state["critic"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch = state["epoch"] + 1
    writer = SummaryWriter(str(out.parent / f"{out.name}-tb"))  # beside the critic: survives its atomic rewrites
    rng = np.random.default_rng(config.seed + start_epoch)
    device = critic.feature_mean.device
    metrics = {}
    for epoch in range(start_epoch, config.epochs):
        order = rng.permutation(train_idx)
        losses: dict[str, list[float]] = {"safety": [], "value": []}
        critic.train()
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"critic epoch {epoch + 1}/{config.epochs}",
                          disable=not progress, leave=False):
            idx = order[start : start + config.batch_size]
            z0 = rng.uniform(config.z0_min, config.z0_max, size=len(idx)).astype(np.float32)
            h, z, safe_target, value_target = _targets(critic, steps, idx, z0, config, device)
            logit, value = critic(h, z)
            loss_s = torch.nn.functional.binary_cross_entropy_with_logits(logit, safe_target)
            loss_v = torch.nn.functional.mse_loss(value, value_target)
            loss = loss_s + loss_v
            if not torch.isfinite(loss):
                writer.close()
                raise FloatingPointError(
                    f"critic loss became {loss.item()} at epoch {epoch + 1}; training stopped. The last good "
                    f"checkpoint is kept in {checkpoint}; lower --lr or check the rollouts")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses["safety"].append(loss_s.item())
            losses["value"].append(loss_v.item())
        critic.eval()
        metrics = evaluate_critic(critic, steps, val_idx, config.budget)
        step = epoch + 1
        writer.add_scalar("losses/safety", float(np.mean(losses["safety"])), step)
        writer.add_scalar("losses/value", float(np.mean(losses["value"])), step)
        for t in PREFIXES:
            writer.add_scalar(f"eval/auroc_{t}", metrics[f"auroc_{t}"], step)
        writer.add_scalar("eval/value_mae", metrics["value_mae"], step)
        writer.add_scalar("safety/safe_rate", metrics["safe_rate"], step)
        with atomic_directory(checkpoint) as tmp:
            torch.save({"critic": critic.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch},
                       tmp / "state.pt")
        if progress:
            print(f"epoch {step}: safety loss {np.mean(losses['safety']):.4f}, value loss {np.mean(losses['value']):.4f}, "
                  f"held-out AUROC@8/16/32 {metrics['auroc_8']:.3f}/{metrics['auroc_16']:.3f}/{metrics['auroc_32']:.3f}")
    writer.close()
    if not metrics:
        critic.eval()
        metrics = evaluate_critic(critic, steps, val_idx, config.budget)
    report = {"held_out": metrics, "data": data_report, "config": asdict(config),
              "train_steps": len(train_idx), "held_out_prompts": len(set(np.array(steps.prompts)[val_idx]))}
    critic.save(out, extra={"metrics.json": report, "train_config.json": asdict(config)})
    atomic_write_json(out / "metrics.json", report)
    return critic, report

