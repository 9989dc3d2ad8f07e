"""Loading Hugging Face models quietly: transformers draws a "Loading weights" bar per model on
stderr, which buries a command's own output (one line per error, one progress bar per run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Transformers' progress bars off while the body loads a model (restored after)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
