"""A2A, as a team speaks it: runs as tasks, sessions as contexts, the answer as an artifact.

Pure: builds the ``a2a-sdk``'s own (protobuf) types from run records and run event frames; the
request handler (``routers/a2a.py``) creates, reads, follows and cancels the runs.

    run status     queued      running   succeeded  failed  cancelled  interrupted  requires_input
    task state     SUBMITTED   WORKING   COMPLETED  FAILED  CANCELED   CANCELED     INPUT_REQUIRED
"""

from __future__ import annotations

from typing import Any

import orjson
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    Artifact,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.timestamp_pb2 import Timestamp

from agent_api.errors import AgentAPIError
from agent_api.models.chat import message_problem
from agent_api.runs.model import Run, RunStatus

ANSWER_ARTIFACT = "answer"
PROTOCOL_VERSION = "1.0"

STATES: dict[RunStatus, TaskState] = {
    RunStatus.QUEUED: TaskState.TASK_STATE_SUBMITTED,
    RunStatus.RUNNING: TaskState.TASK_STATE_WORKING,
    RunStatus.REQUIRES_INPUT: TaskState.TASK_STATE_INPUT_REQUIRED,
    RunStatus.SUCCEEDED: TaskState.TASK_STATE_COMPLETED,
    RunStatus.FAILED: TaskState.TASK_STATE_FAILED,
    RunStatus.CANCELLED: TaskState.TASK_STATE_CANCELED,
    RunStatus.INTERRUPTED: TaskState.TASK_STATE_CANCELED,
}


class A2AInputError(Exception):
    """A message the team cannot take."""


def agent_card(name: str, description: str, url: str, *, version: str) -> AgentCard:
    """A team's Agent Card: one skill (the team's work), streaming, the service's API keys."""
    return AgentCard(
        name=name,
        description=description,
        version=version,
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=PROTOCOL_VERSION)],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=name, name=name, description=description, tags=["autogen", "team"])],
        security_schemes={
            "apiKey": SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(
                    location="header", name="X-API-Key", description="An API key of the service."
                )
            ),
            "bearer": SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer", description="The same API key, as Authorization: Bearer <key>."
                )
            ),
        },
        # Either scheme: the key as X-API-Key, or as a bearer token.
        security_requirements=[
            SecurityRequirement(schemes={"apiKey": StringList()}),
            SecurityRequirement(schemes={"bearer": StringList()}),
        ],
    )


def message_text(message: Message) -> str:
    """The text of a user's message (its text parts, joined); other parts are refused."""
    texts = []
    for part in message.parts:
        if not part.HasField("text"):
            raise A2AInputError("Only text parts are supported.")
        texts.append(part.text)
    text = "".join(texts)
    problem = message_problem(text)
    if problem is not None:
        raise A2AInputError(problem)
    return text


def _timestamp(run: Run) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(run.ended_at or run.started_at or run.created_at)
    return stamp


def _agent_message(run: Run, text: str, suffix: str) -> Message:
    return Message(
        message_id=f"{run.id}-{suffix}",
        context_id=run.session_id,
        task_id=run.id,
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )


def task_status(run: Run) -> TaskStatus:
    """The task's status: its state, and for an ended run the answer or what went wrong."""
    status = TaskStatus(state=STATES[run.status], timestamp=_timestamp(run))
    if run.status is RunStatus.SUCCEEDED and run.result:
        status.message.CopyFrom(_agent_message(run, str(run.result.get("response", "")), "answer"))
    elif run.error:
        text = f"{run.error.get('detail', 'The run failed.')} ({run.error.get('type', 'internal')})"
        status.message.CopyFrom(_agent_message(run, text, "error"))
    return status


def task(run: Run, *, history_length: int | None = None) -> Task:
    """A run as an A2A task: the user's message and, once succeeded, the answer (history and artifact)."""
    history = [
        Message(
            message_id=f"{run.id}-request",
            context_id=run.session_id,
            task_id=run.id,
            role=Role.ROLE_USER,
            parts=[Part(text=run.message)],
        )
    ]
    artifacts = []
    if run.status is RunStatus.SUCCEEDED and run.result:
        answer = str(run.result.get("response", ""))
        history.append(_agent_message(run, answer, "answer"))
        artifacts.append(Artifact(artifact_id=ANSWER_ARTIFACT, name="answer", parts=[Part(text=answer)]))
    if history_length is not None:
        history = history[-history_length:] if history_length > 0 else []
    return Task(
        id=run.id,
        context_id=run.session_id,
        status=task_status(run),
        history=history,
        artifacts=artifacts,
        metadata={"team": run.team},
    )


class StreamEncoder:
    """A run's event frames as A2A stream events: working updates as agents speak, the answer as
    artifact chunks as its tokens come, and a last status update with the final state."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.ended = False
        self._speaker: str | None = None
        self._chunks = 0

    def _status(self, state: TaskState, text: str | None = None) -> TaskStatusUpdateEvent:
        status = TaskStatus(state=state)
        if text is not None:
            status.message.CopyFrom(_agent_message(self.run, text, f"status-{self._chunks}-{state}"))
        return TaskStatusUpdateEvent(task_id=self.run.id, context_id=self.run.session_id, status=status)

    def _artifact(self, text: str, *, last: bool) -> TaskArtifactUpdateEvent:
        update = TaskArtifactUpdateEvent(
            task_id=self.run.id,
            context_id=self.run.session_id,
            artifact=Artifact(artifact_id=ANSWER_ARTIFACT, name="answer", parts=[Part(text=text)]),
            append=self._chunks > 0,
            last_chunk=last,
        )
        self._chunks += 1
        return update

    def start(self) -> list[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]:
        """The task as it is when the stream starts."""
        return [task(self.run)]

    def feed(
        self, event: str, data: str, event_id: str = ""
    ) -> list[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]:
        if self.ended or event in ("session", "usage"):
            return []
        fields: dict[str, Any] = orjson.loads(data)
        out: list[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent] = []
        agent = fields.get("agent")
        if event in ("token", "message", "tool_call") and agent and agent != self._speaker:
            self._speaker = str(agent)
            out.append(self._status(TaskState.TASK_STATE_WORKING, f"{agent} is working"))
        if event == "token" and fields.get("chunk"):
            out.append(self._artifact(str(fields["chunk"]), last=False))
        elif event == "done":
            self.ended = True
            status = RunStatus(fields.get("run_status") or "failed")
            if status is RunStatus.SUCCEEDED:
                if self._chunks == 0 and fields.get("response"):  # nothing streamed (a cached answer)
                    out.append(self._artifact(str(fields["response"]), last=True))
                else:
                    out.append(self._artifact("", last=True))
                out.append(self._status(TaskState.TASK_STATE_COMPLETED, str(fields.get("response") or "")))
            else:
                out.append(self._status(STATES[status], f"The run ended as {status.value}."))
        elif event == "error":
            self.ended = True
            detail = f"{fields.get('detail') or 'The run failed.'} ({fields.get('error_type') or 'internal'})"
            out.append(self._status(TaskState.TASK_STATE_FAILED, detail))
        return out

    def fail(self, error: AgentAPIError) -> list[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]:
        """The end of a stream whose run could not be followed any more."""
        if self.ended:
            return []
        self.ended = True
        return [self._status(TaskState.TASK_STATE_FAILED, f"{error.detail} ({error.error_type})")]
