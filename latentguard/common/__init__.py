"""What every room shares: where files live and how they are written (:mod:`~latentguard.common.storage`),
seeds that depend only on what they seed (:mod:`~latentguard.common.seeding`), plug-in resolution
(:mod:`~latentguard.common.plugins`), and torch work that leaves no OpenMP pool behind
(:mod:`~latentguard.common.threads`)."""
