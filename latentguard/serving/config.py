"""The options of ``latentguard-serve`` (no server package imported: ``--help`` works without them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """Options of ``latentguard-serve``."""

    model: str = "smollm2-135m-instruct"
    """The model served (a spec for :func:`latentguard.lm.load_lm`)."""
    dtype: str = "auto"
    """The model's weights and activations: auto (float32 on the CPU, bfloat16 on a GPU), float32,
    bfloat16, float16. On a CPU with AMX, bfloat16 decodes 1.1-1.7x as fast (``bench/dtype.py``);
    answers then differ from float32's token for token."""
    guard: str = "latent-probe"
    """The guard of the guarded methods (a spec for :func:`latentguard.guards.make_guard`)."""
    reward: str = "relevance"
    """The task reward critic search ranks by."""
    method: str = "vanilla"
    """The method of a request that names none (the bare model name)."""
    host: str = "127.0.0.1"
    """Where to listen (localhost by default: say 0.0.0.0 to serve others)."""
    port: int = 8000
    """TCP port."""
    max_rows: int = 16
    """Most requests decoded together in one batch."""
    max_queue: int = 64
    """Most requests waiting; one more is answered 429."""
    max_n: int = 8
    """Most answers one request may ask for (``n``); each is a row of its own."""
    gather_seconds: float = 0.01
    """How long an idle server waits for another request of one group before it starts the ones it
    has, while they keep coming (at most 4 times this in all), for the methods that take new
    requests at every step (plain sampling, greedy, CARE): a later one joins at the next step."""
    block_gather_seconds: float = 0.1
    """The same for the methods where a later request waits longer: critic search and beam-saute
    (it joins at the next block), ``learned-care`` (at the next decision), best-of-n and beam (in
    the next batch)."""
    max_tokens: int = 256
    """Largest ``max_tokens`` a request may ask for (and the default is 64)."""
    seed: int = 0
    """Run seed: each answer is seeded by it and its prompt, as in ``evaluate.py``."""
    system_prompt: str = ""
    """The system message of every request that brings none (empty: the chat template's default),
    computed once and reused (prefix cache)."""
    prefix_cache: bool = True
    """Reuse the keys and values of the prompt heads every request shares (the chat template's head,
    CARE's critique prompt's) instead of computing them per request (:mod:`latentguard.lm.prefix`)."""

    def __post_init__(self) -> None:
        import torch

        from latentguard.lm.loading import resolve_dtype

        resolve_dtype(self.dtype, torch.device("cpu"))  # an unknown name fails here, naming the choices
        for name in ("port", "max_rows", "max_queue", "max_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gather_seconds", "block_gather_seconds"):
            if not 0 <= float(getattr(self, name)) <= 10:
                raise ValueError(f"{name} must be in [0, 10] seconds, got {getattr(self, name)}")
