"""Guarded generation as a service: a streaming Python API (:class:`Generator`,
:func:`stream_answers`) and the OpenAI-compatible server (``latentguard-serve``,
:mod:`latentguard.serving.server`)."""

from latentguard.serving.generator import Generator
from latentguard.serving.stream import (
    FINISH_REASONS,
    ReleaseTracker,
    StreamError,
    StreamEvent,
    finish_reason,
    stream_answers,
)

__all__ = ["FINISH_REASONS", "Generator", "ReleaseTracker", "StreamError", "StreamEvent", "finish_reason", "stream_answers"]
