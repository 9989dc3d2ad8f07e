"""latentguard-evaluate: decoding methods x prompt sets -> safety, quality and speed, judged apart
from the guard.

    python evaluate.py --methods vanilla,best-of-n --prompts default,advbench:dev \\
        --judge learned,refusal-strict --max-new-tokens 64 --seed 0 --out runs/eval
    python evaluate.py --rejudge runs/eval/samples.jsonl --out runs/rejudged [--judge best]

Writes ``report.md``, ``report.json``, ``samples.jsonl`` and ``safety_quality.png`` into ``--out``;
rerunning with the same ``--out`` resumes. Options mirror :class:`latentguard.evaluation.runner.EvalConfig`; a bad
option or value is one line ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from latentguard.cli.config_args import parse_config, run_cli
from latentguard.evaluation.rejudge import rejudge
from latentguard.evaluation.report import markdown
from latentguard.evaluation.runner import EvalConfig, run_evaluation


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-evaluate``)."""

    parsed: list[EvalConfig] = []

    def body() -> int:
        parsed.append(parse_config(EvalConfig, argv, description=__doc__.splitlines()[0]))
        config = parsed[0]
        report = rejudge(config) if config.rejudge else run_evaluation(config)
        print("\n" + markdown(report))
        print(f"report: {config.out}/report.md, {config.out}/report.json, {config.out}/safety_quality.png")
        return 0

    def interrupted() -> str:
        if not parsed:
            return "nothing was saved"
        out = parsed[0].out
        return (f"the answers finished so far are in {out}/samples.jsonl (saved after every chunk of prompts); "
                "run the same command again to resume from there")

    return run_cli(body, interrupted)


if __name__ == "__main__":
    sys.exit(main())
