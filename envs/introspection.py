"""CARE's introspection: the model criticises its own unreleased answer before continuing.

A separate prompt gives the model the query and its answer so far and asks for a brief
self-critique; the critique's first words are fixed (:data:`OPENING`) by putting them at the start
of the model's turn, and the rest is sampled at its own temperature (CARE uses ~1.1). The critique
is cut to fit the release buffer (``max_tokens``), as in the paper, and returned as token ids so it
can be spliced into the answer, which then continues after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.lm import LanguageModel, SamplingConfig, row_generators, sample_steps

OPENING = "...oh I'm sorry, I just realized"

CRITIQUE_PROMPT = (
    "Here is a request and the beginning of an answer to it.\n\n"
    "Request: {query}\n\n"
    "Answer so far: {answer}\n\n"
    "Briefly criticise the answer so far: could it cause harm, help someone do something dangerous, "
    "illegal or unethical? Start with \"{opening}\" and say what a responsible answer would do instead."
)


def critique_ids(
    lm: LanguageModel,
    queries: Sequence[str],
    answers: Sequence[str],
    max_tokens: int,
    temperature: float = 1.1,
    seeds: Sequence[int] | None = None,
    opening: str = OPENING,
) -> list[list[int]]:
    """One critique per (query, answer), as token ids of at most ``max_tokens`` (opening included).

    One batched prefill and at most ``max_tokens`` batched steps; no end-of-sequence token is kept.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    opening_ids = lm.tokenizer(opening, add_special_tokens=False).input_ids[:max_tokens]
    prompts = [lm.encode_prompt(CRITIQUE_PROMPT.format(query=q, answer=a, opening=opening)) + opening_ids
               for q, a in zip(queries, answers)]
    room = max_tokens - len(opening_ids)
    out = [list(opening_ids) for _ in prompts]
    if room <= 0:
        return out
    state = lm.prefill(token_ids=prompts)
    generators = row_generators(seeds if seeds is not None else range(len(prompts)), lm.device)
    steps = sample_steps(state, room, SamplingConfig(temperature=temperature), generators).tolist()
    for row, tokens in zip(out, steps):
        for token in tokens:
            if token in lm.eos_token_ids:
                break
            row.append(token)
    return out
