"""Language-model backend: load any causal LM (embedded default, hub, folder, GGUF, tiny) and
decode batches with the KV cache inside (:class:`DecodeState`)."""

from latentguard.lm.chat import Chat
from latentguard.lm.generate import Completion, Generation, generate, sample_steps
from latentguard.lm.loading import DEFAULT_MODEL, resolve_model
from latentguard.lm.model import LanguageModel, load_lm
from latentguard.lm.sampling import GREEDY, SamplingConfig, row_generators, sample_tokens
from latentguard.lm.state import FEATURE_POOLINGS, DecodeState, feature_width

__all__ = [
    "DEFAULT_MODEL",
    "FEATURE_POOLINGS",
    "GREEDY",
    "Chat",
    "Completion",
    "DecodeState",
    "Generation",
    "LanguageModel",
    "SamplingConfig",
    "feature_width",
    "generate",
    "load_lm",
    "resolve_model",
    "row_generators",
    "sample_steps",
    "sample_tokens",
]
