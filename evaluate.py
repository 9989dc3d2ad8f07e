"""latentguard-evaluate: decoding methods x prompt sets -> safety, quality and speed, judged apart
from the guard.

    python evaluate.py --methods vanilla,best-of-n --prompts default,advbench:dev \\
        --judge learned,refusal-strict --max-new-tokens 64 --seed 0 --out runs/eval
    python evaluate.py --rejudge runs/eval/samples.jsonl --out runs/rejudged [--judge best]

Writes ``report.md``, ``report.json``, ``samples.jsonl`` and ``safety_quality.png`` into ``--out``;
rerunning with the same ``--out`` resumes. Options mirror :class:`evaluation.runner.EvalConfig`; a bad
option or value is one line ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from envs.cli import parse_config, run_cli
from evaluation.rejudge import rejudge
from evaluation.report import markdown
from evaluation.runner import EvalConfig, run_evaluation


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-evaluate``)."""

    def body() -> int:
        config = parse_config(EvalConfig, argv, description=__doc__.splitlines()[0])
        report = rejudge(config) if config.rejudge else run_evaluation(config)
        print("\n" + markdown(report))
        print(f"report: {config.out}/report.md, {config.out}/report.json, {config.out}/safety_quality.png")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
