"""Shapes the model's raw tokens into the text callers see while it streams.

The stop word (``TERMINATE``) is the agents' signal, not part of the answer, and it can arrive
split over several tokens; the final answer is also trimmed. So the shaper holds back a tail
that may still turn out to be the stop word and releases it once it cannot be. Concatenating
what the shaper emits for the answering agents gives exactly the run's ``response``: their
replies, stripped, joined by a blank line.
"""

from __future__ import annotations

import logging
import re

from agent_api.agents.messages import TERMINATE, strip_termination

log = logging.getLogger(__name__)

REPLY_SEPARATOR = "\n\n"
_FULL_STOP_WORD = re.compile(r"\bTERMINATE[\s.!]*$")
_PARTIAL_WORD = re.compile(r"\b([A-Z]+)$")


_TAIL = 256  # the held-back part is short: look only at the end, not at the whole reply on each token


def releasable_length(text: str) -> int:
    """How much of ``text`` can be shown: all but a trailing part that may become the stop word."""
    end = len(text)
    while end and text[end - 1].isspace():  # trailing whitespace is trimmed at the end
        end -= 1
    if end and not text[end - 1].isupper() and text[end - 1] not in ".!":
        return end  # the text does not end as (a start of) the stop word can: the common case, per token
    offset = max(0, len(text) - _TAIL)
    tail = text[offset:]
    match = _FULL_STOP_WORD.search(tail)
    if match and (match.start() > 0 or offset == 0 or not text[offset - 1].isalnum()):
        start = offset + match.start()
    else:
        partial = _PARTIAL_WORD.search(tail)
        start = offset + partial.start() if partial and TERMINATE.startswith(partial.group(1)) else len(text)
    while start > 0 and text[start - 1].isspace():  # trailing whitespace is trimmed at the end
        start -= 1
    return start


class ReplyShaper:
    """Turns one run's token stream into display text, reply by reply."""

    def __init__(self) -> None:
        self._raw = ""
        self._sent = ""
        self._answered = False  # an earlier reply in this run already contributed text

    def feed(self, token: str) -> str:
        """Add a raw token; return the text that can be shown now (may be empty)."""
        self._raw += token
        text = self._raw.lstrip()
        ready = text[: releasable_length(text)]
        return self._release(ready)

    def end_reply(self, full_text: str = "") -> str:
        """The reply is complete: release what was held back unless it was the stop word.

        ``full_text`` is the whole reply: when none of it was streamed (an answer from the
        response cache, a model that does not stream) it is released in one piece.
        """
        if not self._raw:
            self._raw = full_text
        out = self._release(strip_termination(self._raw))
        if self._sent:
            self._answered = True
        self._raw, self._sent = "", ""
        return out

    def _release(self, ready: str) -> str:
        if len(ready) <= len(self._sent):
            return ""
        if not ready.startswith(self._sent):
            log.debug("token shaper: shown text is no longer a prefix of the reply")
            return ""
        new = ready[len(self._sent) :]
        prefix = REPLY_SEPARATOR if self._answered and not self._sent else ""
        self._sent = ready
        return prefix + new
