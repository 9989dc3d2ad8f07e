"""The learning curve of issue 14's first default policy, its training answers read back from TensorBoard.

Issue 14 asked whether a learned intervention policy (``learned-care``, MaskablePPO on the decision
env) learns anything CARE's fixed rule does not. The first default policy's run (6,144 decisions,
12 PPO updates of 512, 57 min on 2 cores) predates the training answers' means in the policy card
(``state["train"]``), so its curve was rebuilt from the run's TensorBoard scalars: the mean episodic
return, episode cost and share of answers over budget of the episodes that ended in each 512-decision
PPO rollout (sampled actions, drawn budgets), beside the dev evaluations of its card. What it showed:
on its training answers the mean return per rollout rose -0.33 -> +0.16, the episode cost fell
0.38 -> 0.02 and the answers over budget 12% -> 1%, while its deterministic dev answers did not change
after 2,048 decisions. The outputs of the recorded run are ``results/issue14/first_policy/
learning_curve.png`` and ``training_answers.json``; the story is in ``results/history/learned-policy.md``.

    python tools/explore/policy_curve.py --run runs/policy-main --out runs/policy-curve
    # the recorded files: --out results/issue14/first_policy

Later runs need no such script: ``train.py policy`` writes the training answers' means into the
policy card and draws ``learning_curve.png`` itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TAGS = (("return", "charts/episodic_return"), ("episode_cost", "safety/episode_cost"),
        ("over_budget", "safety/over_budget"))
"""The TensorBoard scalars read, by the key they get in ``training_answers.json``."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/policy-main",
                        help="the policy run's output folder, `train.py policy --out` (default: %(default)s)")
    parser.add_argument("--tb", default="", help="its TensorBoard log folder (default: RUN/tb)")
    parser.add_argument("--card", default="", help="its policy card, with the dev evaluations "
                                                   "(default: RUN/policy/policy.json)")
    parser.add_argument("--out", default="runs/policy-curve",
                        help="folder for learning_curve.png and training_answers.json (default: %(default)s)")
    parser.add_argument("--rollout", type=int, default=512,
                        help="decisions per PPO rollout: the window of each mean (default: %(default)s)")
    parser.add_argument("--decisions", type=int, default=6144,
                        help="decisions of the run: the end of the last window (default: %(default)s)")
    args = parser.parse_args(argv)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from latentguard.training.policy_training import plot_learning_curve

    run = Path(args.run)
    tb = Path(args.tb) if args.tb else run / "tb"
    card = Path(args.card) if args.card else run / "policy" / "policy.json"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ea = EventAccumulator(str(tb))
    ea.Reload()
    series = {key: ea.Scalars(tag) for key, tag in TAGS}
    steps = np.array([x.step for x in series["return"]])
    train = []
    for end in range(args.rollout, args.decisions + 1, args.rollout):
        inside = (steps > end - args.rollout) & (steps <= end)
        train.append({"timesteps": end, "episodes": int(inside.sum()),
                      **{k: float(np.mean(np.array([x.value for x in v])[inside])) for k, v in series.items()}})
    evals = json.loads(card.read_text())["evals"]
    plot_learning_curve(evals, out / "learning_curve.png", train)
    (out / "training_answers.json").write_text(json.dumps(train, indent=1) + "\n")


if __name__ == "__main__":
    main()
