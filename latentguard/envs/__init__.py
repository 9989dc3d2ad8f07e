"""The Gymnasium faces of the episode engine (:mod:`latentguard.episodes`) and the Saute wrapper.

- :class:`~latentguard.envs.token_env.TokenCMDPEnv` and
  :class:`~latentguard.envs.token_vector_env.TokenCMDPVectorEnv`: one token per step
  (``latentguard/TokenCMDP-v0``);
- :class:`~latentguard.envs.rewrite_env.RewriteEnv` and
  :class:`~latentguard.envs.rewrite_env.RewriteVectorEnv`: CARE's rollback and introspection as
  actions (``latentguard/Rewrite-v0``);
- :class:`~latentguard.envs.decision_env.DecisionEnv` and
  :class:`~latentguard.envs.decision_env.DecisionVectorEnv`: CARE's decisions at release points, for
  a learned policy (``latentguard/Decision-v0``);
- :class:`~latentguard.envs.saute.SauteWrapper`: a Saute safety budget on any env that reports
  ``info["cost"]``.

The ids are registered by ``import latentguard`` (:mod:`latentguard.envs.registration`).
"""
