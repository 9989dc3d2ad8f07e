"""A whole chat as one prompt.

Every method, guard, reward and judge takes prompts as strings: the request a reader would judge.
A :class:`Chat` is such a string (the text of its last user message) that also carries the whole
conversation the model reads: its own system message and the earlier turns. The model encodes the
conversation (:meth:`latentguard.lm.LanguageModel.encode_prompt`), so latent readers (probes,
critics) see all of it at the request's last token; readers of text (a text guard, the relevance
reward, CARE's critique, the judges) see the last user message, the request being answered.

>>> chat = Chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
>>> str(chat), chat.messages[0]["role"], chat == "Hi"
('Hi', 'system', False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROLES = ("system", "user", "assistant")


class Chat(str):
    """A conversation that ends with a user message, as a prompt (see the module docstring).

    Equal to another :class:`Chat` with the same messages and sample, never to a plain string (two
    chats that end with the same message are different prompts: other seeds, other answers).

    :param messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``; at most one
        system message, first; the last message is the user's.
    :param sample: which answer to the same conversation this prompt asks for: the model reads the
        same tokens, and each sample is seeded apart (a server's ``n`` answers to one request).
    :param prefill: text the assistant's turn starts with, which the answer continues (the prefill
        attack's "Sure, here is", :data:`latentguard.data.attacks.PREFILL`); latent readers read it as
        answer, as :meth:`latentguard.lm.LanguageModel.prefilled` does for every prompt of a block.
    """

    messages: tuple[dict[str, str], ...]
    sample: int
    prefill: str

    def __new__(cls, messages: Sequence[dict[str, Any]], sample: int = 0, prefill: str = "") -> Chat:
        checked = check_messages(messages)
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise ValueError(f"sample must be an integer >= 0, got {sample!r}")
        if not isinstance(prefill, str):
            raise ValueError(f"prefill must be a string (the text the answer starts with), got {prefill!r}")
        chat = super().__new__(cls, checked[-1]["content"])
        chat.messages, chat.sample, chat.prefill = checked, sample, prefill
        return chat

    @property
    def key(self) -> str:
        """The whole conversation (and the sample, when not the first, and the prefill, when any) as
        one string: what seeds tell prompts apart by (:func:`latentguard.common.seeding.prompt_seed`)."""
        turns = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in self.messages)
        turns = f"{turns}\x1d{self.sample}" if self.sample else turns
        return f"{turns}\x1c{self.prefill}" if self.prefill else turns

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chat) and (self.messages, self.sample, self.prefill) == \
            (other.messages, other.sample, other.prefill)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(("chat", self.key))

    def __reduce__(self):  # pickles (Ray, multiprocessing) as a Chat, not as its last message
        return Chat, ([dict(m) for m in self.messages], self.sample, self.prefill)

    def __repr__(self) -> str:
        return (f"Chat({list(self.messages)!r}" + (f", sample={self.sample}" if self.sample else "")
                + (f", prefill={self.prefill!r}" if self.prefill else "") + ")")


def check_messages(messages: Sequence[dict[str, Any]]) -> tuple[dict[str, str], ...]:
    """The messages as plain ``{"role", "content"}`` dicts, or a ``ValueError`` that names the one at
    fault and the fix."""
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"messages must be a non-empty list like [{{'role': 'user', 'content': '...'}}], got {messages!r}")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        role = "system" if role == "developer" else role  # the newer OpenAI name of the system message
        if role not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be an object with a role ({', '.join(ROLES)}) and a string content, "
                             f"got {m!r}")
        if not m["content"].strip():
            raise ValueError(f"messages[{i}].content is empty; give it text")
        if role == "system" and i != 0:
            raise ValueError(f"messages[{i}] is a system message after the first message; put the system message first")
        out.append({"role": role, "content": m["content"]})
    if out[-1]["role"] != "user":
        raise ValueError(f"the last message must be the user's (the answer follows it), got role {out[-1]['role']!r}")
    return tuple(out)
