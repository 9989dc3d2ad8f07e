"""The command lines: ``latentguard-train`` (:mod:`~latentguard.cli.train`), ``latentguard-evaluate``
(:mod:`~latentguard.cli.evaluate`), both generated from dataclass configs
(:mod:`~latentguard.cli.config_args`)."""
