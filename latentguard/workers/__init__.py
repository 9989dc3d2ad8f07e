"""Parallel jobs in-process or on Ray actors, with identical results (:mod:`~latentguard.workers.pool`)."""
