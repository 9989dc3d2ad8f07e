"""Who acts: the decoding methods, each a policy over the episode engine (``latentguard.agents.registry`` lists
them): sampling and greedy, best-of-N (plain and Lagrangian), beam search, CARE's fixed rule (acting
on :class:`latentguard.envs.rewrite_env.RewriteVectorEnv`), critic search, beam-saute, and ``learned-care``: the
MaskablePPO policy ``train.py policy`` trains on :class:`latentguard.envs.decision_env.DecisionVectorEnv`. Each
answers a batch of prompts with one :class:`latentguard.agents.base.Rollout` per prompt."""
