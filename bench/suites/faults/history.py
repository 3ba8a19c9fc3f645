"""A session's stored history compared with what its client was answered."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from suites.faults.attempts import Attempt

READ_TRIES = 3  # reads of a session's history after a run, when they answer 503
HISTORY_CAP = 100  # the service's default MAX_HISTORY_MESSAGES


def stored_turns(messages: list[dict[str, Any]]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Split a stored history into turns (user message, the replies after it) and well-formedness problems."""
    turns: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "user":
            turns.append((str(message.get("content")), []))
        elif not turns:
            problems.append(f"message {i} is '{role}' before any user message")
        else:
            turns[-1][1].append(str(message.get("content")))
    for question, replies in turns:
        if len(replies) != 1:
            problems.append(f"turn {question[:40]!r} has {len(replies)} replies (expected 1)")
    return turns, problems


@dataclass
class HistoryCheck:
    """How one session's stored history compares with what its client saw."""

    session_id: str
    stored_turns: int
    ok_turns: int
    lost: list[str] = field(default_factory=list)  # turns answered 200 but missing, out of order or altered
    duplicated: list[str] = field(default_factory=list)  # a turn stored more than once
    stored_after_failure: list[str] = field(default_factory=list)  # stored, but the request did not answer 200
    unknown: list[str] = field(default_factory=list)  # stored, but never sent by this client
    malformed: list[str] = field(default_factory=list)
    load_error: str | None = None
    read_503s: int = 0  # GET /session answered 503 (then read again, up to READ_TRIES times)

    @property
    def intact(self) -> bool:
        return not (self.lost or self.duplicated or self.unknown or self.malformed or self.load_error)


async def check_history(client: httpx.AsyncClient, session_id: str, attempts: list[Attempt]) -> HistoryCheck:
    """Compare ``GET /session/{id}`` with the turns of ``attempts`` (one client's requests on that session)."""
    ok = [a for a in attempts if a.ok]
    result = HistoryCheck(session_id, 0, len(ok))
    try:
        for _ in range(READ_TRIES):  # a 503 is counted (see read_503s), and the read tried again
            response = await client.get(f"/session/{session_id}")
            if response.status_code != 503:
                break
            result.read_503s += 1
            await asyncio.sleep(0.5)
    except Exception as exc:
        result.load_error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    if response.status_code != 200:
        result.load_error = f"GET /session answered {response.status_code}: {response.text[:200]}"
        # A session the client got answers for but that is gone has lost every one of them.
        result.lost = [a.message for a in ok]
        return result
    messages = response.json().get("messages", [])
    turns, result.malformed = stored_turns(messages)
    result.stored_turns = len(turns)
    # A full history has dropped its oldest turns (MAX_HISTORY_MESSAGES): answered turns older
    # than the first one stored are not lost.
    trimmed = len(messages) >= HISTORY_CAP
    position: dict[str, list[int]] = {}
    for i, (question, _) in enumerate(turns):
        position.setdefault(question, []).append(i)
    result.duplicated = [q for q, where in position.items() if len(where) > 1]
    last = -1
    for attempt in ok:
        where = position.get(attempt.message, [])
        if not where:
            if not (trimmed and last < 0):
                result.lost.append(attempt.message)
            continue
        i = where[0]
        if i < last or turns[i][1] != [attempt.response]:
            result.lost.append(attempt.message)  # out of order, or the stored answer is not the one received
        last = max(last, i)
    sent = {a.message for a in attempts}
    answered = {a.message for a in ok}
    for question, _ in turns:
        if question in answered:
            continue
        (result.stored_after_failure if question in sent else result.unknown).append(question)
    return result


async def check_histories(url: str, by_session: dict[str, list[Attempt]]) -> list[HistoryCheck]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(10)

        async def one(session_id: str, attempts: list[Attempt]) -> HistoryCheck:
            async with semaphore:
                return await check_history(client, session_id, attempts)

        return list(await asyncio.gather(*(one(s, a) for s, a in by_session.items())))


def history_summary(checks: list[HistoryCheck]) -> dict[str, Any]:
    return {
        "sessions": len(checks),
        "intact": sum(c.intact for c in checks),
        "ok_turns": sum(c.ok_turns for c in checks),
        "stored_turns": sum(c.stored_turns for c in checks),
        "lost": sum(len(c.lost) for c in checks),
        "duplicated": sum(len(c.duplicated) for c in checks),
        "stored_after_failure": sum(len(c.stored_after_failure) for c in checks),
        "unknown": sum(len(c.unknown) for c in checks),
        "malformed": sum(len(c.malformed) for c in checks),
        "load_errors": sum(c.load_error is not None for c in checks),
        "read_503s": sum(c.read_503s for c in checks),
        "sessions_read_503": sum(c.read_503s > 0 for c in checks),
        "problems": [asdict(c) for c in checks if not c.intact or c.stored_after_failure][:20],
    }
