"""Who acts: the decoding methods (``agents.registry`` lists them): sampling and greedy, best-of-N
(plain and Lagrangian), beam search, CARE's fixed rule, critic search and beam-saute. Each answers a
batch of prompts with one :class:`agents.base.Rollout` per prompt."""
