"""The token shaper: streamed text adds up to exactly the stored answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_api.agents.messages import TERMINATE, strip_termination
from agent_api.agents.tokens import _FULL_STOP_WORD, _PARTIAL_WORD, ReplyShaper, releasable_length


def shaped(tokens: list[str]) -> str:
    shaper = ReplyShaper()
    return "".join(shaper.feed(t) for t in tokens) + shaper.end_reply()


@pytest.mark.parametrize(
    "tokens",
    [
        ["Hello", " world", ".", " TERMINATE"],
        ["Hello world.", " TERM", "INATE"],
        ["Hello world.", "\n\nTER", "MIN", "ATE", "."],
        ["  Leading", " space", " T", "ERMINATE", "  "],
        ["The TERM", " limit is", " high", " TERMINATE"],
        ["TERMINATE"],
        ["Say TERMINATE", " when", " done"],
        ["A", " T"],
        ["Ends with THE", " END"],
    ],
)
def test_streamed_text_equals_the_stored_reply(tokens: list[str]) -> None:
    assert shaped(tokens) == strip_termination("".join(tokens))


def test_stop_word_is_never_shown_while_streaming() -> None:
    shaper = ReplyShaper()
    shown = [shaper.feed(t) for t in ["Done", " TER", "MINATE"]]
    assert "".join(shown) == "Done"
    assert shaper.end_reply() == ""


def test_later_replies_are_separated_by_a_blank_line() -> None:
    shaper = ReplyShaper()
    first = shaper.feed("one") + shaper.end_reply()
    empty = shaper.feed("TERMINATE") + shaper.end_reply()
    second = shaper.feed("two") + shaper.end_reply()
    assert first + empty + second == "one\n\ntwo"


PIECES = ["alpha", "TERM", "INATE", "TERMINATE", " ", "\n", ".", "!", "x", "The", "T", "TE", "end", " TERMINATE."]


@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=40), st.lists(st.booleans(), min_size=40, max_size=40))
def test_any_token_split_gives_the_stored_reply(pieces: list[str], spaces: list[bool]) -> None:
    tokens = [p + (" " if s else "") for p, s in zip(pieces, spaces, strict=False)]
    assert shaped(tokens) == strip_termination("".join(tokens))


def test_a_long_reply_is_shaped_in_linear_time() -> None:
    tokens = [" word"] * 5000 + [" TERMINATE"]
    assert shaped(tokens) == ("word" + " word" * 4999)


def _releasable_by_pattern(text: str) -> int:
    """releasable_length without its shortcut: the stop-word patterns alone, on the whole text."""
    match = _FULL_STOP_WORD.search(text)
    if match:
        start = match.start()
    else:
        partial = _PARTIAL_WORD.search(text)
        start = partial.start() if partial and TERMINATE.startswith(partial.group(1)) else len(text)
    while start > 0 and text[start - 1].isspace():
        start -= 1
    return start


@given(st.text(alphabet=st.sampled_from(list("TERMINATEterm .!\nxÉé,0")), max_size=60))
def test_the_shortcut_holds_back_what_the_patterns_hold_back(text: str) -> None:
    assert releasable_length(text) == _releasable_by_pattern(text)
