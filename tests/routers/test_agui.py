"""``POST /ag-ui/{team}`` through real HTTP: every event checked against the ``ag-ui-protocol`` models."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
from ag_ui.core import Event, EventType
from pydantic import TypeAdapter

from tests.utils.runs import ended_status

Serve = Callable[..., AbstractContextManager[httpx.Client]]
EVENT = TypeAdapter(Event)
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run


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


def events_of(
    client: httpx.Client, team: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[Any]:
    response = client.post(f"/ag-ui/{team}", json=body, headers={"Accept": "text/event-stream", **(headers or {})})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [
        EVENT.validate_json(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


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
    assert seen[-1] == "RUN_ERROR" and seen[-2] == "STEP_FINISHED"


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
