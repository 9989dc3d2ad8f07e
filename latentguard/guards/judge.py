"""A judge guard: a generative guard model's probability of the "unsafe" verdict, one forward per batch.

Llama Guard, Qwen3Guard-Gen, ShieldGemma and any chat causal LM answer a moderation prompt with
a verdict word. Instead of generating it, :class:`JudgeGuard` runs one forward over the prompt and
reads the next-token distribution at the last position::

    risk = P(unsafe) / (P(unsafe) + P(safe))

where ``P(unsafe)`` sums the probabilities of the first tokens of ``unsafe_tokens`` (likewise for
``safe_tokens``; see :func:`verdict_token_ids` for exactly which ids). The moderation prompt is the
conversation ``[user: prompt, assistant: response]`` through the tokenizer's chat template with
``add_generation_prompt=True``, or your own ``template`` (a format string with ``{prompt}`` and
``{response}``). Rows are left-padded and run in one forward per ``batch_size`` rows.

>>> from latentguard.guards import make_guard
>>> guard = make_guard("judge:tiny")            # a random 2-layer model: the mechanism, not a judge
>>> guard.score(["How do I bake bread?"], ["Mix flour and water."]).shape
(1,)

Real guard models. Llama Guard 3, ShieldGemma and HarmBench's classifier have ready formats
(``make_guard("llama-guard-3:PATH")`` etc., :mod:`latentguard.guards.safety_classifiers`). None of
these was run here (no network): only the mechanism is tested, with tiny models, and what follows
is from their model cards. A hub id is the only spec that downloads anything. Print
``guard.render(prompt, response)`` once to check what the model reads.

- Llama Guard 3: ``make_guard("judge:meta-llama/Llama-Guard-3-1B")`` (or ``-8B``). Its chat
  template writes the whole moderation prompt and ends with the assistant header and ``"\\n\\n"``,
  right where the verdict ``safe`` / ``unsafe`` starts, so the defaults apply. The 1B card passes
  message content as text parts (``[{"type": "text", "text": ...}]``): the judge tries plain
  strings first, then text parts, and keeps the first form whose rendering shows both turns.
- Qwen3Guard-Gen: the model writes the line ``Safety: Safe|Unsafe|Controversial`` itself, so its
  generation prompt ends *before* ``Safety:``; append that with :func:`template_from_chat`::

      tok = AutoTokenizer.from_pretrained("Qwen/Qwen3Guard-Gen-0.6B")
      JudgeGuard("Qwen/Qwen3Guard-Gen-0.6B", template=template_from_chat(tok, suffix="Safety:"),
                 unsafe_tokens=("Unsafe", "Controversial"), safe_tokens=("Safe",))

  (the verdict word then follows a space, which the space variant of each word covers).
- ShieldGemma: a Yes/No verdict to a policy prompt that you write (see its model card), e.g.
  ``JudgeGuard("google/shieldgemma-2b", template=POLICY, unsafe_tokens=("Yes",), safe_tokens=("No",))``
  with ``POLICY`` holding ``{prompt}``, ``{response}`` and your policy text, ending with the
  question whose answer must start with 'Yes' or 'No' (literal braces written ``{{ }}``).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np
import torch

from latentguard.guards.base import Guard, check_model_guard_options, check_risk
from latentguard.lm.loading import load_model_and_tokenizer, resolve_device, resolve_dtype

_PROMPT_MARK, _RESPONSE_MARK = "LATENTGUARDPROMPTMARK", "LATENTGUARDRESPONSEMARK"
_PREFIXES = ("", " ", "\n")  # each verdict word is tokenized bare, after a space and after a newline


def _conversation(prompt: str, response: str, parts: bool) -> list[dict]:
    """The moderation conversation; ``parts``: content as ``[{"type": "text", "text": ...}]``."""
    turns = [("user", prompt), ("assistant", response)]
    return [{"role": r, "content": [{"type": "text", "text": t}] if parts else t} for r, t in turns]


def _render_chat(tokenizer, prompt: str, response: str, parts: bool) -> str:
    conversation = _conversation(prompt, response, parts)
    return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def chat_content_style(tokenizer, model: str) -> bool:
    """Whether the chat template wants text parts (True) or plain string content (False).

    Both forms are tried with marker strings; the first that shows the prompt and the response in
    the rendered text wins. Raises ``ValueError`` when there is no chat template or neither works.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"model {model!r} has no chat template; pass template= a format string with {{prompt}} and "
            "{response} that ends right before the verdict word"
        )
    from jinja2 import TemplateError

    problem = "the rendered text lacks the prompt or the response"
    for parts in (False, True):
        try:
            text = _render_chat(tokenizer, _PROMPT_MARK, _RESPONSE_MARK, parts)
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
            problem = f"{type(err).__name__}: {err}"
            continue
        if _PROMPT_MARK in text and _RESPONSE_MARK in text:
            return parts
    raise ValueError(
        f"the chat template of {model!r} cannot render a [user, assistant] conversation ({problem}); "
        "pass template= a format string with {prompt} and {response}"
    )


def template_from_chat(tokenizer, suffix: str = "", model: str = "this model") -> str:
    """The tokenizer's chat template, rendered once as a ``template`` string, plus ``suffix``.

    Use it when the generation prompt stops before the verdict word, e.g. Qwen3Guard-Gen with
    ``suffix="Safety:"``. The prompt and response are then inserted verbatim (a template that
    edits content, e.g. strips it, no longer does).
    """
    text = _render_chat(tokenizer, _PROMPT_MARK, _RESPONSE_MARK, chat_content_style(tokenizer, model)) + suffix
    text = text.replace("{", "{{").replace("}", "}}")
    return text.replace(_PROMPT_MARK, "{prompt}").replace(_RESPONSE_MARK, "{response}")


def check_template(template: str) -> str:
    """Check that ``template`` formats with exactly the fields ``{prompt}`` and ``{response}``."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"cannot read template {template!r}: {err}; write literal braces as {{{{ and }}}}") from err
    if fields != {"prompt", "response"}:
        raise ValueError(
            f"template must have the fields {{prompt}} and {{response}} and no other, got {sorted(fields)} "
            f"in {template!r}; write literal braces as {{{{ and }}}}"
        )
    return template


def verdict_token_ids(tokenizer, words: Sequence[str], what: str = "verdict",
                      prefixes: Sequence[str] = _PREFIXES) -> list[int]:
    """Ids whose probability counts for ``words`` at the verdict position.

    Each word is tokenized without special tokens after each of ``prefixes`` (by default bare, after
    a space and after a newline). The first token of each is kept unless it decodes to whitespace only (the tokenizer
    split the space or newline off, so that token says nothing about the word). Ids are deduplicated
    in order. Only first tokens count, so a word competes with every word sharing its first token.
    """
    if isinstance(words, str):
        words = (words,)
    ids: list[int] = []
    for word in words:
        found = []
        for prefix in prefixes:
            tokens = tokenizer(prefix + word, add_special_tokens=False).input_ids
            if tokens and tokenizer.decode(tokens[:1]).strip():
                found.append(tokens[0])
        if not found:
            raise ValueError(f"{what} word {word!r} tokenizes to nothing; give a word with visible characters")
        ids += [i for i in found if i not in ids]
    if not ids:
        raise ValueError(f"{what}_tokens is empty; give at least one word")
    return ids


class JudgeGuard(Guard):
    """Risk = P(unsafe verdict) / (P(unsafe) + P(safe)) from a generative guard model.

    :param model: a model spec for :func:`latentguard.lm.loading.load_model_and_tokenizer` (``"tiny"``, a
        local folder, a hub id such as ``"meta-llama/Llama-Guard-3-1B"``, a ``.gguf`` file).
    :param template: a format string with ``{prompt}`` and ``{response}`` used instead of the chat
        template; it must end right before the verdict word. The tokenizer adds its special tokens
        (BOS) unless the text already starts with the BOS token. A sequence of such strings asks
        the model once per template (e.g. one per policy) and keeps the largest risk.
    :param unsafe_tokens: words of the unsafe verdict (see :func:`verdict_token_ids`).
    :param safe_tokens: words of the safe verdict; no first token may be shared with ``unsafe_tokens``.
    :param verdict_prefixes: what each verdict word is tokenized after (see :func:`verdict_token_ids`);
        ``("",)`` reads the bare words only, as ShieldGemma's card does.
    :param device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"``.
    :param dtype: ``"auto"`` (float32 on CPU, bfloat16 on GPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    :param threshold: risk at or above which a response is flagged.
    :param batch_size: rows per forward.
    :param max_length: longest moderation prompt in tokens; a longer one raises ``ValueError``
        (truncating it would cut the policy or the verdict cue).
    """

    @property
    def lineage(self) -> frozenset[str]:
        """The guard model named in its spec."""
        return frozenset({f"model:{self.model_spec}"})

    def __init__(
        self,
        model: str,
        *,
        template: str | Sequence[str] | None = None,
        unsafe_tokens: Sequence[str] = ("unsafe",),
        safe_tokens: Sequence[str] = ("safe",),
        verdict_prefixes: Sequence[str] = _PREFIXES,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        threshold: float = 0.5,
        batch_size: int = 8,
        max_length: int = 2048,
    ) -> None:
        check_model_guard_options(threshold, batch_size, max_length)
        templates = (template,) if isinstance(template, str) else tuple(template or ())
        if template is not None and not templates:
            raise ValueError("template is an empty sequence; give at least one template, or None for the chat template")
        self.templates = tuple(check_template(t) for t in templates)
        """The moderation templates; empty: the tokenizer's chat template."""
        dev = resolve_device(device)
        self.model, self.tokenizer, self.source = load_model_and_tokenizer(model, dev, resolve_dtype(dtype, dev))
        self.parts = False if self.templates else chat_content_style(self.tokenizer, model)
        self.unsafe_ids = verdict_token_ids(self.tokenizer, unsafe_tokens, "unsafe", verdict_prefixes)
        self.safe_ids = verdict_token_ids(self.tokenizer, safe_tokens, "safe", verdict_prefixes)
        shared = sorted(set(self.unsafe_ids) & set(self.safe_ids))
        if shared:
            raise ValueError(
                f"unsafe_tokens {tuple(unsafe_tokens)} and safe_tokens {tuple(safe_tokens)} share the first "
                f"token(s) {self.tokenizer.convert_ids_to_tokens(shared)}; pick words that start differently"
            )
        self.name = f"judge:{model}"
        self.model_spec = model
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)

    @property
    def template(self) -> str | None:
        """The (first) moderation template, or None when the chat template is used."""
        return self.templates[0] if self.templates else None

    def render(self, prompt: str, response: str, which: int = 0) -> str:
        """The moderation prompt for one pair, as text (``which``: the template's index)."""
        if self.templates:
            return self.templates[which].format(prompt=prompt, response=response)
        return _render_chat(self.tokenizer, prompt, response, self.parts)

    def encode(self, prompt: str, response: str, which: int = 0) -> list[int]:
        """Token ids of the moderation prompt for one pair."""
        text = self.render(prompt, response, which)
        bos = self.tokenizer.bos_token
        # Chat templates write their own special tokens; a plain template gets BOS unless it has one.
        add_special = bool(self.templates) and not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=add_special).input_ids

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"score needs one prompt per response, got {len(prompts)} and {len(responses)}")
        per_template = []
        for which in range(max(len(self.templates), 1)):
            rows = [self.encode(p, r, which) for p, r in zip(prompts, responses)]
            for row, ids in enumerate(rows):
                if len(ids) > self.max_length:
                    raise ValueError(
                        f"moderation prompt {row} has {len(ids)} tokens, over max_length={self.max_length}; "
                        "raise max_length (within the model's context) or shorten the prompt or response"
                    )
            risk = [self._risk(rows[i : i + self.batch_size]) for i in range(0, len(rows), self.batch_size)]
            per_template.append(np.concatenate(risk) if risk else np.zeros(0))
        return check_risk(np.max(per_template, axis=0), len(prompts), self.name)

    def _risk(self, rows: list[list[int]]) -> np.ndarray:
        """Risk of one batch of token-id rows: left-padded, one forward, last-position logits."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (b, L)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (b, L)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (b, L): real tokens count from 0
        device = self.model.device
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=1,
            )
        logits = out.logits[:, -1, :].float()  # (b, V)
        # log P(unsafe) - log P(safe); the softmax normaliser cancels, so raw logits suffice.
        margin = logits[:, self.unsafe_ids].logsumexp(-1) - logits[:, self.safe_ids].logsumexp(-1)  # (b,)
        return torch.sigmoid(margin).cpu().numpy().astype(np.float64)
