"""The episode core: the one engine that decodes episodes (:mod:`~latentguard.episodes.engine`), the
Saute safety state it owns (:mod:`~latentguard.episodes.safety_state`), CARE's release buffer and
introspection (:mod:`~latentguard.episodes.release`, :mod:`~latentguard.episodes.introspection`), and
the episode bookkeeping the Gymnasium faces share (:mod:`~latentguard.episodes.token_episodes`)."""
