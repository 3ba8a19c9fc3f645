"""The run: one turn of one team on one session, with a status that only moves forward.

    queued ──> running ──> succeeded | failed | cancelled | interrupted
       │          ╰──────> requires_input (waits for a person) ──> running | failed | ...
       ╰─────> failed | cancelled | interrupted          (ended before a worker took it)

:data:`TRANSITIONS` is the one table of allowed moves; the store's scripts are given the
allowed "from" statuses out of it, so a move that the table forbids never reaches Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    REQUIRES_INPUT = "requires_input"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.REQUIRES_INPUT}
    ),
    RunStatus.REQUIRES_INPUT: frozenset(
        {RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}
    ),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.INTERRUPTED: frozenset(),
}


def can_move(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: RunStatus) -> list[str]:
    """The statuses a run may be in to move to ``target``."""
    return sorted(status.value for status, targets in TRANSITIONS.items() if target in targets)


class IfBusy(StrEnum):
    """What a new run does when its session is busy with another ("double texting")."""

    REJECT = "reject"
    ENQUEUE = "enqueue"
    INTERRUPT = "interrupt"
    ROLLBACK = "rollback"


@dataclass
class Run:
    """A run record as stored: what was asked, by whom, and how it went."""

    id: str
    owner: str
    session_id: str
    team: str
    status: RunStatus
    created_at: datetime
    message: str
    max_turns: int
    stream: bool = True
    started_at: datetime | None = None
    ended_at: datetime | None = None
    webhook: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_to: RunStatus | None = None  # the final status a requested stop ends in
    # A stateless run (an OpenAI-style completion) brings its own history and saves nothing.
    history: list[dict[str, Any]] | None = None
    llm_params: dict[str, Any] = field(default_factory=dict)  # per-run model parameters (temperature, ...)
    input_request: dict[str, Any] | None = None  # what the run waits on while requires_input
    input_event: str | None = None  # the id of its input_request event in the run's log
    trace: dict[str, str] = field(default_factory=dict)  # the trace context it was created in (W3C headers)

    @property
    def stateless(self) -> bool:
        return self.history is not None

    def to_fields(self) -> dict[str, str]:
        """The Redis hash of a new run."""
        fields = {
            "id": self.id,
            "owner": self.owner,
            "session_id": self.session_id,
            "team": self.team,
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "message": self.message,
            "max_turns": str(self.max_turns),
            "stream": "1" if self.stream else "0",
            "metadata": json.dumps(self.metadata),
        }
        if self.webhook:
            fields["webhook"] = self.webhook
        if self.history is not None:
            fields["history"] = json.dumps(self.history)
        if self.llm_params:
            fields["llm_params"] = json.dumps(self.llm_params)
        if self.trace:
            fields["trace"] = json.dumps(self.trace)
        return fields

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Run:
        def when(name: str) -> datetime | None:
            value = raw.get(name)
            return datetime.fromisoformat(value) if value else None

        def obj(name: str) -> Any:
            value = raw.get(name)
            return json.loads(value) if value else None

        cancel_to = raw.get("cancel_to")
        return cls(
            id=raw["id"],
            owner=raw["owner"],
            session_id=raw["session_id"],
            team=raw["team"],
            status=RunStatus(raw["status"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            message=raw["message"],
            max_turns=int(raw["max_turns"]),
            stream=raw.get("stream", "1") == "1",
            started_at=when("started_at"),
            ended_at=when("ended_at"),
            webhook=raw.get("webhook") or None,
            metadata=obj("metadata") or {},
            result=obj("result"),
            error=obj("error"),
            cancel_to=RunStatus(cancel_to) if cancel_to else None,
            history=obj("history"),
            llm_params=obj("llm_params") or {},
            input_request=obj("input_request"),
            input_event=raw.get("input_event") or None,
            trace=obj("trace") or {},
        )


def utcnow() -> datetime:
    return datetime.now(UTC)
