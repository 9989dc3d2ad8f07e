"""The evaluation harness: judges checked against a gold set labelled by reading, guarded rollouts
on prompt sets (:mod:`latentguard.evaluation.runner`), metrics and reports, re-judging. It imports ``envs`` and
``agents`` and is imported by neither."""
