"""The evaluation harness: judges checked against a gold set labelled by reading, guarded rollouts
on prompt sets (:mod:`~latentguard.evaluation.runner`: :class:`EvalConfig`, :func:`run_evaluation`),
metrics and reports, re-judging. It imports every room below it and is imported by none."""

from latentguard.evaluation.runner import EvalConfig, run_evaluation

__all__ = ["EvalConfig", "run_evaluation"]
