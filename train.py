"""latentguard-train: train a guard, collect rollouts, train a critic, fit the judges, train a policy.

    python train.py guard | collect | critic | judge | policy [--option value ...]

The same command as the console script ``latentguard-train`` (:mod:`latentguard.cli.train`).
"""

import sys

from latentguard.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
