"""The same end-to-end checks against a team of each engine: AG2 (the classic AutoGen API) and
AutoGen AgentChat. Real HTTP, a real redis-server, the real engine packages and the offline model."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import EventType

from agent_api.offline_llm import OfflineServer
from tests.routers.test_agui import events_of, run_input, text_of
from tests.routers.test_openai import sdk
from tests.utils.runs import follow, start_run, wait_for_end
from tests.utils.sse import answer, read_frames

Serve = Callable[..., AbstractContextManager[httpx.Client]]
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run
CALCULATE = 'What is 6*7? [[tool:calculator {"expression": "6*7"}]]'
COMPONENT = Path(__file__).parents[2] / "examples" / "teams_agentchat" / "drafter_editor.json"

# (engine, the one-assistant team, the group team)
ENGINES = [("ag2", "research", "research_team"), ("agentchat", "research_ac", "research_team_ac")]
engines = pytest.mark.parametrize(("engine", "pair", "group"), ENGINES, ids=[e[0] for e in ENGINES])


def offline_answer(question: str, earlier: int) -> str:
    return f'Offline answer: you asked "{question}". I can see {earlier} earlier messages.'


@engines
def test_agents_lists_the_engine(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    teams = {t["name"]: t for t in client.get("/agents").json()["teams"]}
    assert teams[pair]["engine"] == engine and teams[group]["engine"] == engine
    assert teams[pair]["pattern"] == "pair" and teams[group]["pattern"] == "group"
    assert teams[group]["speaker_selection"] == "round_robin" and teams[group]["min_turns"] == 3


@engines
def test_chat_and_a_session_continued_across_turns(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    first = client.post("/chat", json={"message": "What is a polyp?", "agent": pair})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["response"] == offline_answer("What is a polyp?", 0) and body["finished"] is True
    assert body["agent"] == pair and body["usage"]["total_tokens"] > 0
    assert [(m["role"], m["name"]) for m in body["messages"]] == [("user", "user"), ("assistant", "research_assistant")]
    # the next turns see the earlier ones (the agent is taken from the session)
    second = client.post("/chat", json={"message": "How does it feed?", "session_id": body["session_id"]}).json()
    assert second["response"] == offline_answer("How does it feed?", 2)
    third = client.post("/chat", json={"message": "And then?", "session_id": body["session_id"]}).json()
    assert third["response"] == offline_answer("And then?", 4)
    history = client.get(f"/session/{body['session_id']}").json()
    assert history["agent"] == pair and len(history["messages"]) == 6


@engines
def test_group_speaks_in_order_and_answers_with_the_writer(
    client: httpx.Client, engine: str, pair: str, group: str
) -> None:
    body = client.post("/chat", json={"message": "Why is the sky blue?", "agent": group}).json()
    names = [m["name"] for m in body["messages"]]
    assert names == ["user", "researcher", "critic", "writer"]
    assert body["response"] == body["messages"][-1]["content"] and "Why is the sky blue?" in body["response"]
    assert body["finished"] is True and body["turns_used"] == 3
    again = client.post("/chat", json={"message": "And at sunset?", "session_id": body["session_id"]}).json()
    assert [m["name"] for m in again["messages"]] == ["user", "researcher", "critic", "writer"]
    assert "And at sunset?" in again["response"]


@engines
def test_stream_sends_tokens_before_the_end(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    response, frames = read_frames(client, {"message": "Explain tides [[tokens:20]] [[latency:0:0.05]]", "agent": pair})
    assert response.status_code == 200
    events = [f.event for f in frames]
    assert events[0] == "session" and events[-1] == "done" and "message" in events and "usage" in events
    tokens = [f for f in frames if f.event == "token"]
    assert len(tokens) > 3  # streamed, not one block
    assert tokens[0].at < frames[-1].at - 0.3  # the first token came well before the end
    assert answer(frames) == frames[-1].data["response"] and len(frames[-1].data["response"].split()) == 20
    assert frames[-1].data["run_status"] == "succeeded" and frames[-1].data["usage"]["total_tokens"] > 0
    assert all(f.data["agent"] == "research_assistant" for f in tokens)


@engines
def test_group_stream_names_each_speaker(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    _, frames = read_frames(client, {"message": "Why is the sea salty?", "agent": group})
    speakers = [f.data["agent"] for f in frames if f.event == "token"]
    assert {"researcher", "critic", "writer"} <= set(speakers)
    assert answer(frames) == frames[-1].data["response"]  # only the writer's tokens are chunks
    assert [f.data["message"]["name"] for f in frames if f.event == "message"] == ["researcher", "critic", "writer"]


@engines
def test_tool_call_and_result(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    _, frames = read_frames(client, {"message": CALCULATE, "agent": pair})
    calls = [f.data["tool_call"] for f in frames if f.event == "tool_call"]
    results = [f.data["tool_result"] for f in frames if f.event == "tool_result"]
    assert len(calls) == 1 and calls[0]["name"] == "calculator"
    assert json.loads(calls[0]["arguments"]) == {"expression": "6*7"}
    assert len(results) == 1 and results[0]["content"] == "42"
    assert frames[-1].data["response"] == "The tool returned 42."
    # the session keeps the exchange, and the next turn gives it back to the model
    session = client.get(f"/session/{frames[0].data['session_id']}").json()["messages"]
    assert [m["role"] for m in session] == ["user", "assistant", "tool", "assistant"]
    assert session[1]["tool_calls"][0]["function"]["name"] == "calculator"
    follow_up = client.post("/chat", json={"message": "thanks", "session_id": frames[0].data["session_id"]}).json()
    assert follow_up["response"] == offline_answer("thanks", 4)


@engines
def test_background_run_and_cancel_mid_stream(
    client: httpx.Client, offline: OfflineServer, engine: str, pair: str, group: str
) -> None:
    done = wait_for_end(client, start_run(client, {"message": "Explain tides.", "agent": pair})["run_id"])
    assert done["status"] == "succeeded" and done["result"]["response"] == offline_answer("Explain tides.", 0)
    first = client.post("/chat", json={"message": "keep", "agent": pair}).json()
    run = start_run(client, {"message": f"cancel me {SLOW}", "session_id": first["session_id"]})
    follow(client, run["run_id"], stop_at_event="token")  # it is streaming
    cancelled = client.post(f"/runs/{run['run_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    frames = follow(client, run["run_id"])
    assert [f.event for f in frames][-2:] == ["error", "done"] and frames[-1].data["run_status"] == "cancelled"
    # nothing saved, and the session is free at once
    history = client.get(f"/session/{first['session_id']}").json()["messages"]
    assert [m["content"] for m in history] == ["keep", first["response"]]
    again = client.post("/chat", json={"message": "next", "session_id": first["session_id"]})
    assert again.status_code == 200 and again.json()["response"] == offline_answer("next", 2)


@engines
def test_openai_sdk_chat_completions(
    client: httpx.Client, offline: OfflineServer, engine: str, pair: str, group: str
) -> None:
    with sdk(client) as oai:
        messages: list[Any] = [{"role": "user", "content": "Describe the moon [[tokens:12]] [[latency:0:0.02]]"}]
        whole = oai.chat.completions.create(model=pair, messages=messages, temperature=0.3, max_tokens=50)
        sent = offline.model.requests[-1]  # the request's model parameters reach the model
        assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50
        assert whole.model == pair and whole.usage is not None and whole.usage.total_tokens > 0
        content = whole.choices[0].message.content
        assert content is not None and len(content.split()) == 12
        stream = oai.chat.completions.create(
            model=pair, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == content and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


@engines
def test_ag_ui_run(client: httpx.Client, engine: str, pair: str, group: str) -> None:
    body = run_input("Explain tides [[tokens:10]] [[latency:0:0.02]]")
    events = events_of(client, pair, body)
    assert events[0].type == EventType.RUN_STARTED and events[-1].type == EventType.RUN_FINISHED
    assert text_of(events) == events[-1].result and len(events[-1].result.split()) == 10
    tools = events_of(client, pair, run_input(CALCULATE, thread_id=str(uuid.uuid4())))
    result = next(e for e in tools if e.type == EventType.TOOL_CALL_RESULT)
    assert result.content == "42" and tools[-1].result == "The tool returned 42."


# --- AgentChat component files -------------------------------------------------------------------


@pytest.fixture
def component_teams(tmp_path: Path) -> Path:
    shutil.copy(COMPONENT, tmp_path / "drafter_editor.json")
    return tmp_path


def test_a_studio_component_round_robin_team_loads_and_answers(serve: Serve, component_teams: Path) -> None:
    with serve(teams_dir=component_teams) as client:
        teams = {t["name"]: t for t in client.get("/agents").json()["teams"]}
        team = teams["drafter_editor"]
        assert team["engine"] == "agentchat" and team["pattern"] == "group"
        assert [a["name"] for a in team["agents"]] == ["drafter", "editor"]
        assert team["agents"][0]["tools"] == ["calculator"]  # the service's tool: the file's source is never run
        body = client.post("/chat", json={"message": "What is a reef?", "agent": "drafter_editor"}).json()
        assert [m["name"] for m in body["messages"]] == ["user", "drafter", "editor"]
        assert body["response"] == offline_answer("What is a reef?", 0) and body["finished"] is True
        _, frames = read_frames(client, {"message": CALCULATE, "agent": "drafter_editor"})
        assert [f.data["tool_result"]["content"] for f in frames if f.event == "tool_result"] == ["42"]
        assert answer(frames) == frames[-1].data["response"] and frames[-1].data["run_status"] == "succeeded"
