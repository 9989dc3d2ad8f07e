"""Prompt sets with labels and fixed splits (:mod:`~latentguard.data.prompt_sets`): the project's own
harm and benign requests shipped beside this file, and AdvBench and jailbreak templates read by path
from the ``pyrit`` package (:mod:`~latentguard.data.pyrit_data`)."""
