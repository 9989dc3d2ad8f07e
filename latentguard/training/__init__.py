"""Training what decodes: the latent probe guard on the policy's own answers (``train.py guard``:
:mod:`~latentguard.training.guard_answers`, :mod:`~latentguard.training.probe_training`,
:mod:`~latentguard.training.guard_training`) and the learned intervention policy (``train.py
policy``: :mod:`~latentguard.training.policy_training`, with the Stable-Baselines3 adapter
:mod:`~latentguard.training.sb3`). The runtime only loads what exists (shipped, or trained here
into the user cache); nothing below this room imports it.

Critics train in :mod:`latentguard.critics`; the judges are fitted in :mod:`latentguard.evaluation`.
"""
