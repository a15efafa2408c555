"""Keeps what is not a sentence out of the spoken answer.

Small models sometimes answer with tool-call syntax, JSON, template markers or the
instructions they were given. The answer streams sentence by sentence; each sentence is
checked before it is released, and the first bad one ends the answer (the caller then
answers from what it knows).
"""

from __future__ import annotations

import re

# Text that never belongs in something said to a person.
_SYNTAX = re.compile(
    r"[{}\[\]]|<\||\|>|<start_of_turn|<end_of_turn|<tool|```|\"\w+\"\s*:|\b[Hh]ass[A-Z]\w+|\bcall:"
)
_SENTENCE_END = re.compile(r"[.!?。！？]\s|\n")
# A sentence this long found verbatim in the prompt was copied from it, not said.
MIN_COPIED_CHARS = 24


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


class AnswerGuard:
    """Feed streamed answer text; get back the part that is safe to show or speak."""

    def __init__(self, prompt_text: str = "") -> None:
        """Start a guard for an answer to the prompt text (used to spot copying)."""
        self._prompt = _normal(prompt_text)
        self._pending = ""
        self.released = ""
        self.rejected = False
        # The first sentence that was kept back (for the debug log).
        self.rejected_text = ""

    def _acceptable(self, sentence: str) -> bool:
        if _SYNTAX.search(sentence):
            return False
        normal = _normal(sentence)
        return not (len(normal) >= MIN_COPIED_CHARS and normal in self._prompt)

    def _release(self, text: str) -> str:
        if self.rejected or not text:
            return ""
        if not self._acceptable(text):
            self.rejected, self.rejected_text = True, text
            return ""
        self.released += text
        return text

    def feed(self, piece: str) -> str:
        """Add streamed text; return the complete, acceptable sentences it finished."""
        if self.rejected:
            return ""
        self._pending += piece
        out = ""
        while not self.rejected and (match := _SENTENCE_END.search(self._pending)):
            sentence, self._pending = (
                self._pending[: match.end()],
                self._pending[match.end() :],
            )
            out += self._release(sentence)
        return out

    def finish(self) -> str:
        """Return the rest of the answer, if acceptable."""
        rest, self._pending = self._pending, ""
        return self._release(rest)

    @property
    def said_nothing(self) -> bool:
        """Nothing acceptable was said (the caller answers in its place)."""
        return not self.released.strip()
