"""Guard training: the policy's own answers to labelled requests (:mod:`training.guard_answers`),
probe selection and fitting (:mod:`training.probe_training`) and ``train.py guard``
(:mod:`training.guard_training`). It imports ``envs`` and is never imported by it: the runtime
only loads guards that exist (shipped, or trained here into the user cache)."""
