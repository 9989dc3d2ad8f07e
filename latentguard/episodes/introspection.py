"""CARE's introspection: the model criticises its own unreleased answer before continuing.

A separate prompt gives the model the query and its answer so far and asks for a brief
self-critique; the critique's first words are fixed (:data:`OPENING`) by putting them at the start
of the model's turn, and the rest is sampled at its own temperature (CARE uses ~1.1). The critique
is cut to fit the release buffer (``max_tokens``), as in the paper, and spliced into the answer as
token ids; the answer then continues after it.

The critique is decoded on a helper row of the same engine as the answers (:mod:`latentguard.envs.rewrite_env`):
its tokens share the forwards of the other episodes' steps, so a critique costs the batch no
forwards of its own, and the episode it is for waits until it is done.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from latentguard.lm import LanguageModel
from latentguard.lm.prefix import common_start

OPENING = "...oh I'm sorry, I just realized"

CRITIQUE_PROMPT = (
    "Here is a request and the beginning of an answer to it.\n\n"
    "Request: {query}\n\n"
    "Answer so far: {answer}\n\n"
    "Briefly criticise the answer so far: could it cause harm, help someone do something dangerous, "
    "illegal or unethical? Start with \"{opening}\" and say what a responsible answer would do instead."
)


def critique_prompt_ids(lm: LanguageModel, query: str, answer: str, opening: str = OPENING) -> list[int]:
    """Token ids of the critique prompt for (query, answer so far), ending with the opening's ids:
    the model's turn starts with the opening and the critique is sampled on from there."""
    prompt = CRITIQUE_PROMPT.format(query=query, answer=answer, opening=opening)
    return lm.encode_prompt(prompt, assistant_prefill="") + opening_ids(lm, opening)


def critique_head_ids(lm: LanguageModel, opening: str = OPENING) -> list[int]:
    """The tokens every critique prompt starts with (the chat head and the instruction up to the
    request): the longest common start of two critique prompts' ids. Registered in the model's
    prefix cache (:mod:`latentguard.lm.prefix`), it is computed once and not for every critique."""
    return common_start(critique_prompt_ids(lm, "Hello there.", "Hi.", opening),
                        critique_prompt_ids(lm, "What is 2 + 2?", "Four.", opening))


def opening_ids(lm: LanguageModel, opening: str = OPENING) -> list[int]:
    """The opening's token ids (no special tokens)."""
    return lm.tokenizer(opening, add_special_tokens=False).input_ids


SENTENCE_ENDS = (".", "!", "?")
PARAGRAPH = "\n\n"


def close_hidden(lm: LanguageModel, ids: list[int], opening: int, limit: int) -> list[int]:
    """A critique (or phrase) kept from the user, closed so that the answer resumes at a sentence.

    Hidden, a critique cut mid-sentence would make the answer's next released tokens finish *its*
    sentence: the user would read an answer that starts mid-sentence (" system is designed to ...").
    So the splice is cut after its last sentence end past the first ``opening`` tokens (a full stop
    is added when it has none), and a paragraph break follows; the whole stays within ``limit`` tokens.
    """
    brk = lm.tokenizer(PARAGRAPH, add_special_tokens=False).input_ids
    stop = lm.tokenizer(".", add_special_tokens=False).input_ids
    body = list(ids[: max(1, limit - len(brk) - len(stop))])
    ends = [i for i in range(opening, len(body)) if lm.decode(body[: i + 1]).endswith(SENTENCE_ENDS)]
    body = body[: ends[-1] + 1] if ends else body + stop
    return body + brk


@dataclass
class Critique:
    """A critique being written for episode ``row`` on the engine's helper row ``helper``.

    ``ids`` holds the opening and the tokens sampled so far; it is done at an end-of-sequence token
    (not kept) or at ``max_tokens`` tokens (the last one is sampled, never fed), as in the paper.
    """

    row: int
    helper: int
    ids: list[int]
    max_tokens: int
    generator: torch.Generator
    started: bool = False  # its prompt has been fed; the next token can be sampled

    def add(self, token: int, eos: Collection[int]) -> bool:
        """Take a sampled token; True when the critique is done."""
        if token in eos:
            return True
        self.ids.append(int(token))
        return len(self.ids) >= self.max_tokens
