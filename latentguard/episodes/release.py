"""CARE's buffered release, rollback and introspection (Decoding-time safety via rollback and
introspection, arXiv 2509.06982): the release bookkeeping of the rewrite environments
(:mod:`latentguard.envs.rewrite_env`), whose rewrite actions it carries out on the engine.

- **Release buffer.** The newest ``buffer`` (b) response tokens are held back; older ones are
  released to the user once a check has passed with them in the answer. The guard checks the query
  and the whole response every ``check_every`` tokens (default b/2, so every token is checked
  before it leaves the buffer) and at the end; the rest of the buffer is released once the final
  check passes.
- **Rollback.** A flagged check crops the decoding state back to the end of the released text:
  the KV cache is cut, not recomputed (:meth:`latentguard.lm.DecodeState.crop`).
- **Interventions** after a rollback: ``resample`` (decode again from the released text),
  ``introspect`` (the model writes a brief self-critique that starts with a fixed opening, see
  :mod:`latentguard.episodes.introspection`; it starts the new buffer and decoding continues after it), or
  ``phrase`` (the fixed opening alone, no generated critique). ``show_critique`` says whether a
  critique is released to the user (CARE: yes) or kept in the model's context only.
- **Limits.** At most ``max_attempts`` (N) interventions per unsafe span (the count restarts when a
  check passes); then the ``fallback``: ``continue`` (the paper: accept the span and stop checking
  this answer) or ``refuse`` (fail closed: release the text released so far plus a refusal, never
  the flagged text). ``single`` is CARE-lite: one rollback and intervention, then no more checks.
- **Counters** per answer: interventions, wait tokens (tokens added while nothing was released:
  ``b * (1 + interventions)`` for an answer longer than the buffer), guard calls, discarded tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from latentguard.episodes.engine import Engine
from latentguard.episodes.introspection import OPENING
from latentguard.lm import LanguageModel

INTERVENTIONS = ("resample", "introspect", "phrase")
FALLBACKS = ("continue", "refuse")
REFUSAL = "I'm sorry, but I can't help with that."


@dataclass
class RewriteConfig:
    """Options of the release buffer and its interventions."""

    buffer: int = 40
    """b: response tokens held back from the user."""
    check_every: int = 0
    """Guard check period in tokens; 0 = b // 2."""
    max_attempts: int = 5
    """N: interventions per unsafe span before the fallback."""
    intervention: str = "introspect"
    """'resample', 'introspect' or 'phrase'; or a schedule over the attempts on one span, joined by
    '+' (e.g. 'resample+introspect': resample first, introspect from the second attempt on; the
    last entry repeats)."""
    fallback: str = "refuse"
    """After N attempts: 'continue' (accept and stop checking) or 'refuse' (release a refusal)."""
    single: bool = False
    """CARE-lite: one rollback and intervention, then no more checks."""
    show_critique: bool = True
    """Release the critique text to the user (CARE) or keep it in the model's context only."""
    critique_temperature: float = 1.1
    """Sampling temperature of the introspection."""
    opening: str = OPENING
    """Fixed opening of the critique, and the text of the 'phrase' intervention."""
    refusal: str = REFUSAL
    """Text released by the 'refuse' fallback."""

    def __post_init__(self) -> None:
        if self.buffer < 2:
            raise ValueError(f"buffer (b) must be >= 2, got {self.buffer}")
        if self.max_attempts < 0:
            raise ValueError(f"max_attempts (N) must be >= 0, got {self.max_attempts}")
        unknown = [x for x in self.intervention.split("+") if x not in INTERVENTIONS]
        if unknown:
            raise ValueError(f"unknown intervention {unknown[0]!r} in {self.intervention!r}; use one of {INTERVENTIONS} "
                             "or a '+' schedule of them, e.g. 'resample+introspect'")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {self.fallback!r}; use one of {FALLBACKS}")
        if self.check_every == 0:
            self.check_every = self.buffer // 2
        if not 1 <= self.check_every <= self.buffer:
            raise ValueError(f"check_every must be in [1, buffer={self.buffer}], got {self.check_every}")

    def intervention_at(self, attempt: int) -> str:
        """The intervention of the ``attempt``-th try (0-based) on one unsafe span."""
        schedule = self.intervention.split("+")
        return schedule[min(attempt, len(schedule) - 1)]


@dataclass
class RowRecord:
    """Release bookkeeping of one answer."""

    released: int = 0  # response tokens released so far
    checked: int = 0  # response tokens covered by the last passing check
    hidden: list[tuple[int, int]] = field(default_factory=list)  # critique spans kept from the user
    attempts: int = 0
    interventions: int = 0
    wait_tokens: int = 0
    discarded: int = 0
    inserted: int = 0  # critique / phrase tokens spliced in
    sampled: int = 0  # tokens decoded, rolled-back ones included
    guard_calls: int = 0
    checking: bool = True  # False after a 'continue' fallback or CARE-lite's one intervention
    refused: bool = False
    fallback: str | None = None


class ReleaseBuffer:
    """Release, rollback and interventions for ``n`` answers (see the module docstring).

    The engine holds the decoding state and the response token lists; this class rolls rows back
    (:meth:`rollback`), accounts for what is spliced in (:meth:`inserted`) and tracks what the user
    has been shown. The rewrite env (:mod:`latentguard.envs.rewrite_env`) decides when and writes critiques.
    """

    def __init__(self, lm: LanguageModel, config: RewriteConfig, n: int) -> None:
        self.lm, self.config = lm, config
        self.rows = [RowRecord() for _ in range(n)]

    def reset_row(self, row: int) -> None:
        self.rows[row] = RowRecord()

    # ------------------------------------------------------------------ schedule
    def check_due(self, row: int, length: int, final: bool) -> bool:
        """Whether the guard must see this answer now."""
        return self.rows[row].checking and (final or length % self.config.check_every == 0)

    def advance(self, row: int, length: int, final: bool) -> None:
        """Release what left the buffer and has passed a check (everything when ``final``).

        While checks run, nothing unchecked is released (a spliced critique waits for the next
        check); after a 'continue' fallback or CARE-lite's intervention the buffer alone decides.
        Steps that release nothing count as waiting tokens.
        """
        rec = self.rows[row]
        new = length if final else max(rec.released, length - self.config.buffer)
        if rec.checking and not final:
            new = max(rec.released, min(new, rec.checked))
        if new == rec.released and not final:
            rec.wait_tokens += 1
        rec.released = new

    def passed(self, row: int, length: int, final: bool) -> None:
        """A check passed: the unsafe-span counter restarts and the buffer moves on."""
        self.rows[row].attempts = 0
        self.rows[row].checked = length
        self.advance(row, length, final)

    def can_intervene(self, row: int) -> bool:
        rec = self.rows[row]
        return rec.checking and rec.attempts < self.config.max_attempts

    def fail(self, row: int, length: int, final: bool) -> None:
        """A check flagged and no attempt is left: take the fallback."""
        rec = self.rows[row]
        rec.fallback = self.config.fallback
        rec.checking = False
        if self.config.fallback == "refuse":
            rec.refused = True
        else:
            self.advance(row, length, final)

    def refuse(self, row: int) -> None:
        """A policy ends the answer with the refusal (the decision env's 'refuse'): what was released
        stays, the rest is never shown, no more checks."""
        rec = self.rows[row]
        rec.refused, rec.checking, rec.fallback = True, False, "refuse"

    # ------------------------------------------------------------------ rewriting
    def rollback(self, engine: Engine, rows: Sequence[int]) -> dict[int, str]:
        """Roll ``rows`` of ``engine`` back to their released text (one crop) and count an
        intervention on each. Returns the text each row had before, the one the guard flagged."""
        counts = [0] * engine.n
        flagged_text = {}
        for row in rows:
            rec = self.rows[row]
            counts[row] = len(engine.responses[row]) - rec.released
            flagged_text[row] = engine.text(row)
            rec.discarded += counts[row]
            rec.checked = min(rec.checked, rec.released)
            rec.hidden = [(a, b) for a, b in rec.hidden if b <= rec.released]
            rec.attempts += 1
            rec.interventions += 1
            if self.config.single:
                rec.checking = False
        engine.crop(counts)
        return flagged_text

    def inserted(self, row: int, start: int, length: int) -> None:
        """Bookkeeping of ``length`` critique or phrase tokens spliced into ``row`` at ``start``:
        they are waiting tokens, and hidden from the user unless ``show_critique``."""
        rec = self.rows[row]
        rec.wait_tokens += length
        rec.inserted += length
        if not self.config.show_critique:
            rec.hidden.append((start, start + length))

    # ------------------------------------------------------------------ what the user sees
    def released_ids(self, row: int, response: Sequence[int]) -> list[int]:
        rec = self.rows[row]
        keep = [i for i in range(rec.released) if not any(a <= i < b for a, b in rec.hidden)]
        return [response[i] for i in keep if response[i] not in self.lm.eos_token_ids]

    def released_text(self, row: int, response: Sequence[int]) -> str:
        """The text the user has been shown (plus the refusal after a 'refuse' fallback)."""
        text = self.lm.decode(self.released_ids(row, response))
        if self.rows[row].refused:
            text = f"{text.rstrip()} {self.config.refusal}".strip()
        return text

    def unreleased(self, row: int, response: Sequence[int]) -> int:
        return len(response) - self.rows[row].released
