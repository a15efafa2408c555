"""Conversation turns: idempotency scopes, confirmations and the user's "yes".

The idempotency scope of a request (one turn and its retries), the turn a confirmation
answers (the one right before), and whether the user's words are a "yes".

A satellite or a client that did not get an answer sends the same words again within
seconds; that retry belongs to the same turn, so its tool calls get the same keys and
never act twice. The same words later, or after anything else was said in the
conversation, are a new request: a desired-state action then converges (acts if the
state no longer holds), a one-shot action asked again soon needs confirmation (the
executor's repeat window), and no outcome of an earlier turn (failed, unconfirmed,
needing confirmation, indeterminate) is replayed into it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import hashlib
import re
import time
import uuid

# Same words in the same conversation within this many seconds of the turn's end (or
# while it runs), nothing in between: a retry.
RETRY_WINDOW_S = 10.0
# Turns whose words are remembered per conversation (the current one
# included): what "it" may mean.
WORDS_REMEMBERED = 3
# Conversations remembered (the oldest is forgotten first).
MAX_CONVERSATIONS = 512


def _digest(words: str) -> str:
    return hashlib.sha256(" ".join(words.lower().split()).encode()).hexdigest()[:16]


class TurnScopes:
    """Hands out one scope per turn, the same one to a retry of the last turn."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        retry_window_s: float = RETRY_WINDOW_S,
    ) -> None:
        """Start with no turns remembered."""
        self.clock = clock
        self.retry_window_s = retry_window_s
        # Per conversation: (digest of the last turn's words, its time, its id, the
        # turn before's id).
        self._last: OrderedDict[str, tuple[str, float, str, str | None]] = OrderedDict()
        # per conversation: the words of its last few turns, the current one last
        # ("open the garage door", "yes", "yes, open it")
        self._words: dict[str, tuple[str, ...]] = {}

    def scope(self, source: str, conversation_id: str, words: str) -> str:
        """Return the scope of a new turn with these words.

        The last turn's scope if this is its retry.
        """
        key = f"{source}:{conversation_id}"
        digest, now = _digest(words), self.clock()
        last = self._last.pop(key, None)
        if (
            last is not None
            and last[0] == digest
            and now - last[1] <= self.retry_window_s
        ):
            turn, previous = last[2], last[3]
        else:
            turn, previous = (
                uuid.uuid4().hex[:16],
                last[2] if last is not None else None,
            )
            self._words[key] = (
                *self._words.get(key, ())[-WORDS_REMEMBERED + 1 :],
                words,
            )
        self._last[key] = (digest, now, turn, previous)
        while len(self._last) > MAX_CONVERSATIONS:
            forgotten, _ = self._last.popitem(last=False)
            self._words.pop(forgotten, None)
        return f"{key}:{turn}"

    def finish(self, source: str, conversation_id: str) -> None:
        """Mark the turn answered: its retry window starts now.

        A slow turn is not retried early.
        """
        key = f"{source}:{conversation_id}"
        if (last := self._last.get(key)) is not None:
            self._last[key] = (last[0], self.clock(), last[2], last[3])

    def earlier_words(self, source: str, conversation_id: str) -> str:
        """Return the user's words in the turns before the current one ("" if none)."""
        return "\n".join(self._words.get(f"{source}:{conversation_id}", ())[:-1])

    def previous(self, source: str, conversation_id: str) -> str | None:
        """Return the scope of the turn before the current one.

        It is the only turn whose question the current turn can answer.
        """
        key = f"{source}:{conversation_id}"
        last = self._last.get(key)
        return f"{key}:{last[3]}" if last is not None and last[3] is not None else None


# A confirmation must be the user's own "yes", not only the model's flag.
# Words of assent in the languages Assist users speak most; any word of
# refusal makes the answer a "no".
_YES = re.compile(
    r"\b(yes|yeah|yep|yup|sure|ok|okay|confirm|confirmed|go ahead|do it|please do|"
    r"affirmative|correct|"
    r"ja|jawohl|klar|bestätigt|mach das|oui|d'accord|vas-y|confirme|sí|si|claro|dale|"
    r"vale|confirmo|"
    r"certo|conferma|doe maar|zeker|tak)\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"\b(no|nope|not|don't|dont|do not|cancel|stop|never|wait|nein|nicht|abbrechen|"
    r"non|pas|annule|"
    r"nunca|cancela|annulla|nee|niet|nie)\b",
    re.IGNORECASE,
)


def is_affirmation(words: str) -> bool:
    """Return whether the user's words say yes (and nothing that says no)."""
    return bool(_YES.search(words)) and not _NO.search(words)


# Words that may stand around a "yes" without changing what it answers.
_FILLER = re.compile(
    r"\b(please|thanks|thank you|bitte|danke|merci|s'il te plaît|por favor|gracias|"
    r"grazie|per favore|alstublieft|dank je)\b",
    re.IGNORECASE,
)


def is_bare_affirmation(words: str) -> bool:
    """Return whether the words are only a "yes" ("yes please", "ok, go ahead").

    Such an answer confirms exactly what the last turn asked; "yes, close it" says
    more and is left to the model.
    """
    if not is_affirmation(words):
        return False
    rest = _FILLER.sub(" ", _YES.sub(" ", words))
    return not re.sub(r"[\s,.!;:¡¿]+", "", rest)
