"""The real ``@ag-ui/client`` (HttpAgent, from tests/node's lockfile) against ``POST /ag-ui/{team}``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

NODE_DIR = Path(__file__).parents[1] / "node"
EXAMPLE_TEAMS = Path(__file__).parents[2] / "examples" / "teams"
Serve = Callable[..., AbstractContextManager[httpx.Client]]


def run_client(client: httpx.Client, team: str, message: str, resume: list[Any] | None = None) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@ag-ui" / "client").is_dir():
        pytest.skip("node or tests/node/node_modules missing: `make test` installs them")
    env = {
        **os.environ,
        "BASE_URL": str(client.base_url).rstrip("/"),
        "TEAM": team,
        "API_KEY": "unused",
        "MESSAGE": message,
        **({"RESUME": json.dumps(resume)} if resume is not None else {}),
    }
    done = subprocess.run([node, "agui_client.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_ag_ui_client_watches_a_group_chat(client: httpx.Client) -> None:
    seen = run_client(client, "research_team", "What are tides? [[tokens:12]] [[latency:0:0.02]]")
    first = seen["first"]
    events = first["events"]
    types = [e["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert events[0]["threadId"] == seen["threadId"] and events[0]["runId"] == first["runId"]
    # every agent's turn is a step, and its text messages sit inside it, labelled with its name
    steps = [e["stepName"] for e in events if e["type"] == "STEP_STARTED"]
    assert steps == ["researcher", "critic", "writer"], steps  # the team file's round robin
    open_step, open_message = None, None
    for event in events:
        kind = event["type"]
        if kind == "STEP_STARTED":
            assert open_step is None and open_message is None
            open_step = event["stepName"]
        elif kind == "STEP_FINISHED":
            assert event["stepName"] == open_step and open_message is None
            open_step = None
        elif kind == "TEXT_MESSAGE_START":
            assert open_message is None and event["name"] == open_step
            open_message = event["messageId"]
        elif kind == "TEXT_MESSAGE_CONTENT":
            assert event["messageId"] == open_message and event["delta"]
        elif kind == "TEXT_MESSAGE_END":
            assert event["messageId"] == open_message
            open_message = None
    assert open_step is None and open_message is None
    # each message starts with its words, not with a separator left from another agent's reply
    firsts = [
        e
        for i, e in enumerate(events)
        if e["type"] == "TEXT_MESSAGE_CONTENT" and events[i - 1]["type"] == "TEXT_MESSAGE_START"
    ]
    assert len(firsts) == 3 and all(e["delta"] == e["delta"].lstrip() for e in firsts)
    # the writer's deltas, as they came (several of them), add up to the final answer
    writer_ids = {e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START" and e["name"] == "writer"}
    deltas = [e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT" and e["messageId"] in writer_ids]
    assert len(deltas) > 3 and "".join(deltas) == events[-1]["result"] == first["result"]
    assert first["result"].startswith("Offline answer")
    # the run is a run of the service: /runs knows it by the client's runId
    run = client.get(f"/runs/{first['runId']}").json()
    assert run["status"] == "succeeded" and run["session_id"] == seen["threadId"]
    assert run["result"]["response"] == first["result"]
    # a second run on the thread continues the stored session: the model sees the first turn
    second = seen["second"]
    assert second["events"][-1]["type"] == "RUN_FINISHED"
    assert "I can see 0 earlier messages" not in second["result"]
    stored = client.get(f"/session/{seen['threadId']}").json()
    assert stored["agent"] == "research_team"
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [
        "What are tides? [[tokens:12]] [[latency:0:0.02]]",
        "And what did I ask first?",
    ]


@pytest.mark.parametrize(
    ("team", "message", "answers"),
    [
        ("concierge", "Where is Paris?", ["In France, thanks", ""]),
        ("careful_calculator", 'What is 6*7? [[tool:calculator {"expression": "6*7"}]]', [{"approved": True}]),
    ],
    ids=["message", "approval"],
)
def test_ag_ui_client_resumes_interrupts(serve: Serve, team: str, message: str, answers: list[Any]) -> None:
    with serve(teams_dir=EXAMPLE_TEAMS) as client:
        seen = run_client(client, team, message, resume=answers)
        runs = seen["runs"]
        assert len(runs) == len(answers) + 1
        # every run but the last ended with one interrupt, which the client resumed with a new run
        for interrupted, resumed in zip(runs, runs[1:], strict=False):
            assert interrupted["finished"]["outcome"] == "interrupt" and interrupted.get("result") is None
            (interrupt,) = interrupted["finished"]["interrupts"]
            assert interrupted["events"][-1]["type"] == "RUN_FINISHED"
            assert interrupted["events"][-1]["outcome"]["interrupts"][0]["id"] == interrupt["id"]
            assert interrupt["id"].startswith("req_") and interrupt["message"]
            assert interrupt["metadata"]["serviceRunId"] == runs[0]["runId"]
            started = resumed["events"][0]
            assert started["type"] == "RUN_STARTED" and started["runId"] == resumed["runId"] != runs[0]["runId"]
        last = runs[-1]
        assert last["finished"]["outcome"] == "success" and last["events"][-1]["type"] == "RUN_FINISHED"
        assert seen["pendingInterrupts"] == []
        # all of it was one run of the service, under the first AG-UI run's id
        run = client.get(f"/runs/{runs[0]['runId']}").json()
        assert run["status"] == "succeeded" and run["result"]["response"] == last["result"]
        first = runs[0]["finished"]["interrupts"][0]
        if team == "concierge":
            assert first["reason"] == "input_required" and first["responseSchema"]["type"] == "string"
            assert first["message"].startswith('Offline answer: you asked "Where is Paris?"')
            assert runs[1]["finished"]["interrupts"][0]["id"] != first["id"]  # it asks after every reply
            deltas = "".join(e["delta"] for e in runs[1]["events"] if e["type"] == "TEXT_MESSAGE_CONTENT")
            assert deltas.startswith('Offline answer: you asked "In France, thanks"')
            stored = client.get(f"/session/{seen['threadId']}").json()["messages"]
            assert [m["content"] for m in stored if m["role"] == "user"] == ["Where is Paris?", "In France, thanks"]
        else:
            # the approval names the call the first run showed; the resumed run gives its result
            call = next(e for e in runs[0]["events"] if e["type"] == "TOOL_CALL_START")
            assert first["reason"] == "tool_call" and first["toolCallId"] == call["toolCallId"]
            assert first["responseSchema"]["required"] == ["approved"]
            types = [e["type"] for e in last["events"]]
            assert "TOOL_CALL_START" not in types and "TOOL_CALL_RESULT" in types
            result = next(e for e in last["events"] if e["type"] == "TOOL_CALL_RESULT")
            assert result["toolCallId"] == call["toolCallId"] and result["content"] == "42"
            assert last["result"] == "The tool returned 42."
            # the client put the result after the call it answers, though they came in two runs
            at = next(i for i, m in enumerate(seen["messages"]) if m.get("toolCalls"))
            assert seen["messages"][at]["toolCalls"][0]["id"] == call["toolCallId"]
            assert seen["messages"][at + 1] == {"role": "tool", "content": "42", "toolCallId": call["toolCallId"]}
