"""Who acts: the decoding methods, each a policy over the episode engine (``agents.registry`` lists
them): sampling and greedy, best-of-N (plain and Lagrangian), beam search, CARE's fixed rule (acting
on :class:`envs.rewrite_env.RewriteVectorEnv`), critic search and beam-saute. Each answers a batch
of prompts with one :class:`agents.base.Rollout` per prompt. Policies trained with Stable-Baselines3
act on the same environments (``envs.sb3``); none is shipped yet."""
