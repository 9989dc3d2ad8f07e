"""The learning curve of the default policy's run, its training answers read back from TensorBoard
(kept for the record; paths as moved. That run predates ``state["train"]``): means per 512-decision PPO rollout."""
import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from latentguard.training.policy_training import plot_learning_curve

ea = EventAccumulator("runs/policy-main/tb")
ea.Reload()
series = {key: ea.Scalars(tag) for key, tag in (("return", "charts/episodic_return"), ("episode_cost", "safety/episode_cost"),
                                               ("over_budget", "safety/over_budget"))}
steps = np.array([x.step for x in series["return"]])
train = []
for end in range(512, 6144 + 1, 512):
    inside = (steps > end - 512) & (steps <= end)
    train.append({"timesteps": end, "episodes": int(inside.sum()),
                  **{k: float(np.mean(np.array([x.value for x in v])[inside])) for k, v in series.items()}})
evals = json.loads(Path("runs/policy-main/policy/policy.json").read_text())["evals"]
plot_learning_curve(evals, Path("results/issue14/first_policy/learning_curve.png"), train)
Path("results/issue14/first_policy/training_answers.json").write_text(json.dumps(train, indent=1) + "\n")
