"""``POST /ag-ui/{team}`` through real HTTP: every event checked against the ``ag-ui-protocol`` models."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from ag_ui.core import Event, EventType
from pydantic import TypeAdapter

from tests.utils.runs import ended_status

Serve = Callable[..., AbstractContextManager[httpx.Client]]
EVENT: TypeAdapter[Any] = TypeAdapter(cast(Any, Event))  # Event is an annotated union, not a class
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run
EXAMPLE_TEAMS = Path(__file__).parents[2] / "examples" / "teams"  # concierge, careful_calculator
CALCULATE = 'What is 6*7? [[tool:calculator {"expression": "6*7"}]]'


def run_input(text: str, *, thread_id: str | None = None, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "threadId": thread_id or str(uuid.uuid4()),
        "runId": run_id or str(uuid.uuid4()),
        "messages": [{"id": "m1", "role": "user", "content": text}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


def resume_input(thread_id: str, *entries: dict[str, Any]) -> dict[str, Any]:
    """A resuming run, as a client sends it: the thread's messages so far (not read) and the answers."""
    body = run_input("not read", thread_id=thread_id, resume=list(entries))
    body["messages"].append({"id": "a1", "role": "assistant", "content": "the client's copy of a reply"})
    return body


def post_events(
    client: httpx.Client, team: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[Any]]:
    response = client.post(f"/ag-ui/{team}", json=body, headers={"Accept": "text/event-stream", **(headers or {})})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        EVENT.validate_json(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    return response, events


def events_of(
    client: httpx.Client, team: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[Any]:
    return post_events(client, team, body, headers)[1]


def interrupt_of(events: list[Any]) -> Any:
    """The one interrupt the AG-UI run ended with."""
    last = events[-1]
    assert last.type == EventType.RUN_FINISHED and last.outcome is not None and last.outcome.type == "interrupt"
    assert last.result is None and len(last.outcome.interrupts) == 1
    return last.outcome.interrupts[0]


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)


@pytest.fixture
def hitl(serve: Serve) -> Iterator[httpx.Client]:
    """The app with the example teams that ask a person."""
    with serve(teams_dir=EXAMPLE_TEAMS) as client:
        yield client


def test_every_event_is_an_ag_ui_event(client: httpx.Client) -> None:
    body = run_input("Explain tides [[tokens:10]] [[latency:0:0.02]]")
    events = events_of(client, "research", body)
    types = [e.type for e in events]
    assert types[0] == EventType.RUN_STARTED and types[-1] == EventType.RUN_FINISHED
    assert events[0].thread_id == body["threadId"] and events[0].run_id == body["runId"]
    assert types[1:4] == [EventType.STEP_STARTED, EventType.TEXT_MESSAGE_START, EventType.TEXT_MESSAGE_CONTENT]
    assert types[-3:-1] == [EventType.TEXT_MESSAGE_END, EventType.STEP_FINISHED]
    start = events[2]
    assert start.role == "assistant" and start.name == "research_assistant"
    text = "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)
    assert text == events[-1].result and text.startswith('Offline answer: you asked "Explain tides')


def test_tool_calls_are_tool_call_events(client: httpx.Client) -> None:
    events = events_of(client, "research", run_input('What is 6*7? [[tool:calculator {"expression": "6*7"}]]'))
    types = [e.type for e in events]
    tool_types = [t for t in types if t.value.startswith("TOOL_CALL")]
    assert tool_types == [
        EventType.TOOL_CALL_START,
        EventType.TOOL_CALL_ARGS,
        EventType.TOOL_CALL_END,
        EventType.TOOL_CALL_RESULT,
    ]
    start = next(e for e in events if e.type == EventType.TOOL_CALL_START)
    args = next(e for e in events if e.type == EventType.TOOL_CALL_ARGS)
    result = next(e for e in events if e.type == EventType.TOOL_CALL_RESULT)
    assert start.tool_call_name == "calculator" and json.loads(args.delta) == {"expression": "6*7"}
    assert result.tool_call_id == start.tool_call_id and result.content == "42"
    assert events[-1].type == EventType.RUN_FINISHED and events[-1].result == "The tool returned 42."


def test_failed_run_ends_with_run_error_without_internals(client: httpx.Client) -> None:
    events = events_of(client, "research", run_input("break [[fail:500]]"))
    assert events[-1].type == EventType.RUN_ERROR and events[-1].code == "upstream_error"
    assert "Traceback" not in events[-1].message and "openai" not in events[-1].message.lower()
    assert EventType.RUN_FINISHED not in [e.type for e in events]


def test_leaving_cancels_the_run(client: httpx.Client) -> None:
    body = run_input(f"leave {SLOW}")
    with client.stream("POST", "/ag-ui/research", json=body) as response:
        for line in response.iter_lines():
            if "TEXT_MESSAGE_CONTENT" in line:
                break  # the team is talking: leave
    assert ended_status(client, body["runId"]) == "cancelled"
    assert client.get(f"/session/{body['threadId']}").json()["messages"] == []  # nothing saved


def test_cancel_through_runs_ends_the_stream(client: httpx.Client) -> None:
    body = run_input(f"stop me {SLOW}")
    seen: list[str] = []
    with client.stream("POST", "/ag-ui/research", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["type"])
                if seen[-1] == "TEXT_MESSAGE_CONTENT" and seen.count("TEXT_MESSAGE_CONTENT") == 1:
                    assert client.post(f"/runs/{body['runId']}/cancel").json()["status"] == "cancelled"
    # stopped, not failed: AG-UI's cancelled outcome
    assert seen[-1] == "RUN_FINISHED" and seen[-2] == "STEP_FINISHED" and "RUN_ERROR" not in seen


def test_bad_input_and_unknown_teams(client: httpx.Client) -> None:
    assert client.post("/ag-ui/nobody", json=run_input("hi")).status_code == 404
    assert client.post("/ag-ui/research", json={"threadId": "t"}).status_code == 422
    bad_thread = client.post("/ag-ui/research", json=run_input("hi", thread_id="not a thread id!"))
    assert bad_thread.status_code == 422 and bad_thread.json()["detail"][0]["loc"] == ["body", "threadId"]
    last_not_user = run_input("hi")
    last_not_user["messages"].append({"id": "m2", "role": "assistant", "content": "me last"})
    response = client.post("/ag-ui/research", json=last_not_user)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "messages"]
    bad_turns = client.post("/ag-ui/research", json=run_input("hi", forwardedProps={"max_turns": 99}))
    assert bad_turns.status_code == 422


def test_threads_and_run_ids(serve: Serve) -> None:
    alice, bob = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}
    with serve(api_keys="alice-key,bob-key") as client:
        body = run_input("first")
        events_of(client, "research", body, headers=alice)
        # the thread is alice's session: bob cannot use it, nor read the run
        assert (
            client.post("/ag-ui/research", json=run_input("mine?", thread_id=body["threadId"]), headers=bob).status_code
            == 404
        )
        assert client.get(f"/runs/{body['runId']}", headers=bob).status_code == 404
        # a runId is a run's id: it cannot be used twice
        again = client.post(
            "/ag-ui/research", json=run_input("again", thread_id=body["threadId"], run_id=body["runId"]), headers=alice
        )
        assert again.status_code == 409
        # a thread stays with its team
        other = client.post("/ag-ui/research_team", json=run_input("switch", thread_id=body["threadId"]), headers=alice)
        assert other.status_code == 409
        # and continues its history
        events = events_of(client, "research", run_input("second", thread_id=body["threadId"]), headers=alice)
        assert events[-1].result.endswith("I can see 2 earlier messages.")


def test_a_message_interrupt_resumes_with_the_persons_words(hitl: httpx.Client) -> None:
    body = run_input("Where is Paris?")
    events = events_of(hitl, "concierge", body)
    assert [e.type for e in events][-3:] == [
        EventType.TEXT_MESSAGE_END,
        EventType.STEP_FINISHED,
        EventType.RUN_FINISHED,
    ]
    interrupt = interrupt_of(events)
    assert events[-1].run_id == body["runId"] and events[0].protocol_version == "1.0"
    # the stream has ended, and the run was not cancelled: it waits on the interrupt's request
    run = hitl.get(f"/runs/{body['runId']}").json()
    assert run["status"] == "requires_input"
    request = run["input_request"]
    assert interrupt.id == request["request_id"] and interrupt.reason == "input_required"
    assert interrupt.message == request["prompt"] == text_of(events) and interrupt.tool_call_id is None
    assert interrupt.response_schema["type"] == "string"
    assert interrupt.metadata == {"agent": "concierge", "serviceRunId": body["runId"]}
    assert interrupt.expires_at is not None
    left = datetime.fromisoformat(interrupt.expires_at) - datetime.now(UTC)
    assert 3500 < left.total_seconds() <= 3600  # INPUT_TIMEOUT after it asked

    # the person answers: the same run goes on, streamed as a new AG-UI run (the client's runId)
    answer = resume_input(body["threadId"], {"interruptId": interrupt.id, "status": "resolved", "payload": "In France"})
    response, events = post_events(hitl, "concierge", answer)
    assert response.headers["x-run-id"] == body["runId"]  # the run of the service keeps its id
    assert events[0].type == EventType.RUN_STARTED and events[0].run_id == answer["runId"]
    assert events[0].thread_id == body["threadId"]
    assert text_of(events) == 'Offline answer: you asked "In France". I can see 2 earlier messages.'
    again = interrupt_of(events)  # the concierge asks after each of its replies
    assert again.id != interrupt.id and events[-1].run_id == answer["runId"]
    assert hitl.get(f"/runs/{answer['runId']}").status_code == 404  # the resuming runId is the AG-UI run's only

    # an empty answer accepts the reply: the run ends, and the person's words are in the session
    done = resume_input(body["threadId"], {"interruptId": again.id, "status": "resolved", "payload": {"content": ""}})
    events = events_of(hitl, "concierge", done)
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.RUN_FINISHED]
    assert events[-1].outcome is None and events[-1].result.endswith(
        'you asked "In France". I can see 2 earlier messages.'
    )
    run = hitl.get(f"/runs/{body['runId']}").json()
    assert run["status"] == "succeeded" and run["result"]["response"] == events[-1].result
    stored = hitl.get(f"/session/{body['threadId']}").json()["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["Where is Paris?", "In France"]


@pytest.mark.parametrize(
    ("payload", "result"),
    [
        (
            {"approved": False, "reason": "Not on my bill."},
            "The user denied this call of calculator; the tool was not run. Their reason: Not on my bill.",
        ),
        (True, "42"),
    ],
    ids=["denied", "approved"],
)
def test_an_approval_interrupt_names_the_tool_call(hitl: httpx.Client, payload: Any, result: str) -> None:
    body = run_input(CALCULATE)
    events = events_of(hitl, "careful_calculator", body)
    types = [e.type for e in events]
    assert EventType.TOOL_CALL_END in types and EventType.TOOL_CALL_RESULT not in types  # the call waits
    call = next(e for e in events if e.type == EventType.TOOL_CALL_START)
    interrupt = interrupt_of(events)
    assert interrupt.reason == "tool_call" and interrupt.tool_call_id == call.tool_call_id
    assert interrupt.message == 'calculator_agent wants to run calculator with {"expression": "6*7"}.'
    assert interrupt.response_schema["required"] == ["approved"]
    assert set(interrupt.response_schema["properties"]) == {"approved", "reason"}

    answer = resume_input(body["threadId"], {"interruptId": interrupt.id, "status": "resolved", "payload": payload})
    events = events_of(hitl, "careful_calculator", answer)
    types = [e.type for e in events]
    assert types[:2] == [EventType.RUN_STARTED, EventType.TOOL_CALL_RESULT] and types[-1] == EventType.RUN_FINISHED
    assert EventType.TOOL_CALL_START not in types  # the call was shown by the run it interrupted
    assert events[1].tool_call_id == call.tool_call_id and events[1].content == result
    assert events[-1].result == f"The tool returned {result}."  # the agent's reply quotes it
    assert hitl.get(f"/runs/{body['runId']}").json()["status"] == "succeeded"


def test_a_cancelled_interrupt_cancels_the_run(hitl: httpx.Client) -> None:
    body = run_input("Where is Paris?")
    interrupt = interrupt_of(events_of(hitl, "concierge", body))
    events = events_of(
        hitl, "concierge", resume_input(body["threadId"], {"interruptId": interrupt.id, "status": "cancelled"})
    )
    # the client stopped it: a cancelled run, not a failed one
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.RUN_FINISHED]
    assert events[-1].outcome is not None and events[-1].outcome.type == "cancelled" and events[-1].result is None
    assert hitl.get(f"/runs/{body['runId']}").json()["status"] == "cancelled"
    assert hitl.get(f"/session/{body['threadId']}").json()["messages"] == []  # nothing saved
    # the thread is free: the next message is an ordinary run
    after = run_input("Where is Rome?", thread_id=body["threadId"])
    interrupt_of(events_of(hitl, "concierge", after))
    assert hitl.post(f"/runs/{after['runId']}/cancel").json()["status"] == "cancelled"


def test_a_resume_that_does_not_fit_changes_nothing(hitl: httpx.Client) -> None:
    body = run_input("Where is Paris?")
    thread = body["threadId"]
    interrupt = interrupt_of(events_of(hitl, "concierge", body))

    def resume(*entries: dict[str, Any], team: str = "concierge", thread_id: str = thread) -> httpx.Response:
        return hitl.post(f"/ag-ui/{team}", json=resume_input(thread_id, *entries))

    def answer(payload: Any) -> dict[str, Any]:
        return {"interruptId": interrupt.id, "status": "resolved", "payload": payload}

    # an interrupt the run does not wait on (an old one, a typo): 409, naming the one it waits on
    wrong = resume({"interruptId": "req_nothing", "status": "resolved", "payload": "hi"})
    assert wrong.status_code == 409 and interrupt.id in wrong.json()["detail"]
    assert resume({"interruptId": "req_nothing", "status": "cancelled"}).status_code == 409
    # a payload of another shape than the request's: 422 naming the field
    for payload in ({"approved": True}, 42, None, {"content": "x", "extra": 1}, "x" * 4001):
        refused = resume(answer(payload))
        assert refused.status_code == 422, payload
        assert refused.json()["detail"][0]["loc"] == ["body", "resume", 0, "payload"]
    # one entry per resume: a run waits on one request at a time
    two = resume(answer("a"), answer("b"))
    assert two.status_code == 422 and two.json()["detail"][0]["loc"] == ["body", "resume"]
    # another team's endpoint, a thread nobody has
    assert resume(answer("hi"), team="research").status_code == 409
    assert resume(answer("hi"), thread_id=str(uuid.uuid4())).status_code == 404
    # a new message while the run waits
    assert hitl.post("/ag-ui/concierge", json=run_input("hello?", thread_id=thread)).status_code == 409
    # none of it touched the run: it waits on the same request
    run = hitl.get(f"/runs/{body['runId']}").json()
    assert run["status"] == "requires_input" and run["input_request"]["request_id"] == interrupt.id

    # 'exit' ends the conversation; the same answer again finds nothing waiting
    events = events_of(hitl, "concierge", resume_input(thread, answer("exit")))
    assert events[-1].type == EventType.RUN_FINISHED and events[-1].outcome is None
    assert hitl.get(f"/runs/{body['runId']}").json()["status"] == "succeeded"
    replay = resume(answer("exit"))
    assert replay.status_code == 409 and "succeeded" in replay.json()["detail"]
