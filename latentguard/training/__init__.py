"""Guard training: the policy's own answers to labelled requests (:mod:`latentguard.training.guard_answers`),
probe selection and fitting (:mod:`latentguard.training.probe_training`) and ``train.py guard``
(:mod:`latentguard.training.guard_training`). It imports ``envs`` and is never imported by it: the runtime
only loads guards that exist (shipped, or trained here into the user cache)."""
