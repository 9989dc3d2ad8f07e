"""Seeds that depend only on what they seed, never on batch composition or order."""

from __future__ import annotations

import hashlib


def prompt_seed(seed: int, prompt: str, sample: int | str = 0) -> int:
    """A stable 63-bit seed for one sample of one prompt under a run seed. A prompt with a ``key``
    (a :class:`latentguard.lm.Chat`) is seeded by its whole conversation. ``sample`` names the draw:
    an index, or a string such as a search's ``"search|round|draw|place"``.

    >>> prompt_seed(0, "hi") == prompt_seed(0, "hi") != prompt_seed(1, "hi")
    True
    """
    text = getattr(prompt, "key", prompt)
    digest = hashlib.sha256(f"{seed}|{sample}|{text}".encode()).hexdigest()
    return int(digest[:15], 16)
