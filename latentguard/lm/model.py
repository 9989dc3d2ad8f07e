"""The language-model backend: a causal LM, its tokenizer and chat template, and latent capture.

>>> lm = load_lm("tiny")                        # a 2-layer random model, hidden size 64
>>> state = lm.prefill(["How do I bake bread?", "Hi"])
>>> state.step(state.logits.argmax(-1))        # one forward for both rows
>>> state.latent().shape                       # (B, H) float32, middle layer
(2, 64)

Latent layers follow Hugging Face's ``output_hidden_states`` numbering: ``0`` is the embedding
output, ``i`` the output of decoder layer ``i - 1``, ``num_layers`` the final normalised state.
Only the last position of the captured layers is kept, by forward hooks (no extra forward, no
copy of the other layers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from latentguard.lm.chat import Chat
from latentguard.lm.loading import DEFAULT_MODEL, load_model_and_tokenizer, resolve_device, resolve_dtype
from latentguard.lm.prefix import PrefixCache, common_start
from latentguard.lm.state import DecodeState

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Prompt = str | Sequence[dict]  # plain text (a Chat: a whole conversation), or chat messages [{"role": ..., "content": ...}]


class LanguageModel:
    """A loaded causal LM that prefills and decodes batches (see :class:`DecodeState`).

    :param model: a Hugging Face causal LM with ``model.model.layers`` and ``model.model.norm``
        (Llama, Mistral, Qwen, Gemma, SmolLM ... families).
    :param tokenizer: its tokenizer; the chat template is used when it has one.
    :param model_id: the name recorded in guard and critic checkpoints.
    :param latent_layers: layers whose last-position hidden state is captured; the first is the
        default latent. ``None``: the middle layer (``num_layers // 2``).
    :param system_prompt: system message for chat templates; ``None`` keeps the template's default.

    ``assistant_prefill`` (normally empty) is text the model's turn starts with, after the chat
    template's generation prompt: the answer continues it. The prefill attack sets it
    (:meth:`prefilled`): "Sure, here is" puts compliance in the model's mouth.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        model_id: str,
        latent_layers: Sequence[int] | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.system_prompt = system_prompt
        self.assistant_prefill = ""
        self.forced_tails: set[tuple[int, ...]] = set()  # token ids of every assistant prefill encoded
        config = model.config
        self.num_layers: int = config.num_hidden_layers
        self.hidden_size: int = config.hidden_size
        self.vocab_size: int = model.get_output_embeddings().weight.shape[0]
        self.context_length: int = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.pad_token_id: int = tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids: frozenset[int] = frozenset(eos + [tokenizer.eos_token_id])
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.history_layers: set[int] = set()  # layers whose every position the state keeps
        layers = [self.num_layers // 2] if latent_layers is None else list(latent_layers)
        if not layers:
            raise ValueError("latent_layers must name at least one layer, got an empty list")
        self.latent_layer = self.normalise_layer(layers[0])
        for layer in layers:
            self.capture_layer(layer)
        self.prefixes = PrefixCache(self)  # heads computed once (the chat template's, CARE's critique prompt's)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self.model.dtype

    @property
    def has_chat_template(self) -> bool:
        """Whether prompts are wrapped in the tokenizer's chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ------------------------------------------------------------------ latents
    def normalise_layer(self, layer: int) -> int:
        """Map ``layer`` (negative counts from the end, like Python) to ``0..num_layers``."""
        n = self.num_layers
        if not -(n + 1) <= layer <= n:
            raise ValueError(f"latent layer {layer} is out of range for a {n}-layer model; use -{n + 1}..{n}")
        return layer % (n + 1)

    def capture_layer(self, layer: int, history: bool = False) -> int:
        """Capture ``layer``'s hidden states on every forward; returns its index.

        The last position is always kept (``DecodeState.latent``). With ``history=True`` every
        position is kept in the decoding state too, so that pooled features over the response
        (``DecodeState.pooled_latent``) cost no extra forward.
        """
        layer = self.normalise_layer(layer)
        if history:
            self.history_layers.add(layer)
        if layer in self._hooks:
            return layer
        decoder = self.model.get_decoder()
        if layer < self.num_layers:  # input of decoder layer `layer` == output of layer - 1

            def pre_hook(module, args, kwargs):
                self._captured[layer] = args[0] if args else kwargs["hidden_states"]  # (B, L, H)

            handle = decoder.layers[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:

            def hook(module, args, output):
                self._captured[layer] = output  # (B, L, H)

            handle = decoder.norm.register_forward_hook(hook)
        self._hooks[layer] = handle
        return layer

    @property
    def captured_layers(self) -> list[int]:
        """The layers whose latents every forward records."""
        return sorted(self._hooks)

    def pop_captured(self) -> dict[int, torch.Tensor]:
        """Take the hidden states the last forward captured (layer -> (B, L, H))."""
        captured, self._captured = self._captured, {}
        return captured

    def check_reader(self, what: str, model_id: str, latent_size: int, layer: int, fix: str) -> None:
        """Refuse a head (``what``: "probe", "critic") trained on another model, size or layer."""
        if self.model_id != model_id:
            raise ValueError(f"this {what} was trained on model {model_id!r}, not {self.model_id!r}; {fix}")
        if self.hidden_size != latent_size:
            raise ValueError(f"this {what} reads latents of size {latent_size}, but {self.model_id!r} has "
                             f"{self.hidden_size}: the {what} file belongs to another model")
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"this {what} reads layer {layer}, but {self.model_id!r} has layers 0..{self.num_layers}")

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompt: Prompt, assistant_prefill: str | None = None) -> list[int]:
        """Token ids of ``prompt`` wrapped in the chat template, ready for the answer, and the
        ``assistant_prefill`` the answer continues (``None``: the prompt's own when it is a
        :class:`Chat` with a ``prefill``, else the model's :attr:`assistant_prefill`)."""
        if assistant_prefill is not None:
            prefill = assistant_prefill
        else:
            prefill = getattr(prompt, "prefill", "") or self.assistant_prefill
        prefill_ids = self.tokenizer(prefill, add_special_tokens=False).input_ids if prefill else []
        if prefill_ids:
            self.forced_tails.add(tuple(prefill_ids))
        return self._chat_ids(prompt) + prefill_ids

    @property
    def assistant_prefill_ids(self) -> list[int]:
        """Tokens of :attr:`assistant_prefill` that every encoded prompt ends with ([] when none)."""
        if not self.assistant_prefill:
            return []
        return list(self.tokenizer(self.assistant_prefill, add_special_tokens=False).input_ids)

    def forced_length(self, ids: Sequence[int]) -> int:
        """How many of a prompt's last tokens are forced assistant text (read as answer, not request):
        the longest assistant prefill this model encoded (:meth:`encode_prompt`, per prompt or under
        :meth:`prefilled`) that ``ids`` end with and do not consist of; 0 for none."""
        ids = tuple(ids)
        return max((len(t) for t in self.forced_tails if len(ids) > len(t) and ids[-len(t):] == t), default=0)

    @contextmanager
    def prefilled(self, text: str) -> Iterator[None]:
        """Within the block, every prompt's answer starts with ``text`` (see :attr:`assistant_prefill`)."""
        before, self.assistant_prefill = self.assistant_prefill, text
        try:
            yield
        finally:
            self.assistant_prefill = before

    def _chat_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, Chat):  # the whole conversation (its own system message, earlier turns)
            messages = list(prompt.messages)
        elif isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty; give a non-empty string")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = list(prompt)
        if not self.has_chat_template:
            text = "\n".join(m["content"] for m in messages)
            return self.tokenizer(text).input_ids
        if self.system_prompt is not None and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def chat_head_ids(self) -> list[int]:
        """The tokens every encoded prompt starts with (the chat template's head, its default system
        prompt included): the longest common start of two unrelated prompts' ids."""
        return common_start(self.encode_prompt("Hello there."), self.encode_prompt("What is 2 + 2?"))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens removed."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ------------------------------------------------------------------ decoding
    def prefill(
        self, prompts: Sequence[Prompt] | None = None, *, token_ids: Sequence[Sequence[int]] | None = None
    ) -> DecodeState:
        """Start decoding a batch: prompts through the chat template, or raw ``token_ids``.

        Rows are left-padded to one width and run in one forward.
        """
        if (prompts is None) == (token_ids is None):
            raise ValueError("prefill takes either prompts or token_ids, not both or neither")
        if token_ids is None:
            if isinstance(prompts, str):
                raise TypeError("prefill takes a list of prompts; wrap a single prompt as [prompt]")
            assert prompts is not None  # one of the two is given (checked above)
            token_ids = [self.encode_prompt(p) for p in prompts]
        token_ids = [list(t) for t in token_ids]
        if not token_ids:
            raise ValueError("prefill needs at least one prompt, got an empty batch")
        for row, ids in enumerate(token_ids):
            if not ids:
                raise ValueError(f"prompt {row} has no tokens; give a non-empty prompt")
            if len(ids) > self.context_length:
                raise ValueError(
                    f"prompt {row} has {len(ids)} tokens, over the context window of {self.context_length}; "
                    "shorten it or use a model with a longer context"
                )
        state = DecodeState(self, len(token_ids))
        state.feed(token_ids, restart=range(len(token_ids)))
        return state


def load_lm(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    latent_layers: Sequence[int] | None = None,
    system_prompt: str | None = None,
    seed: int = 0,
) -> LanguageModel:
    """Load a :class:`LanguageModel` from a model spec (see :mod:`latentguard.lm.loading`).

    :param model: ``"smollm2-135m-instruct"`` (default, embedded), ``"tiny"``, a hub id, a local
        folder or a ``.gguf`` file. Only a hub id may reach the network.
    :param device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"``; an absent device is an error.
    :param dtype: ``"auto"`` (float32 on CPU, bfloat16 on GPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    :param latent_layers: captured layers, the first being the default latent (middle layer if ``None``).
    :param system_prompt: system message for the chat template (``None``: the template's default).
    :param seed: initialisation seed of ``"tiny"``.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    hf_model, tokenizer, source = load_model_and_tokenizer(model, dev, torch_dtype, seed=seed)
    return LanguageModel(hf_model, tokenizer, source.model_id, latent_layers=latent_layers, system_prompt=system_prompt)
