"""latentguard-evaluate: decoding methods x prompt sets -> safety, quality and speed, judged apart
from the guard.

    python evaluate.py --methods vanilla,care,critic-search --prompts default --out runs/eval

The same command as the console script ``latentguard-evaluate`` (:mod:`latentguard.cli.evaluate`).
"""

import sys

from latentguard.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
