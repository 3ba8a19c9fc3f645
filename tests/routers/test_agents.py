"""Teams through HTTP: the registry, the research_team group chat, tools, team files."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.agents.loader import TeamConfigError
from agent_api.config import Settings
from agent_api.main import create_app
from agent_api.offline_llm import OfflineServer
from tests.utils.process import serve_refusing_to_start
from tests.utils.sse import answer, read_frames

Serve = Callable[..., AbstractContextManager[httpx.Client]]

AUTO_TEAM = """
name: auto_team
description: Three agents, the model picks who speaks.
pattern: group
agents:
  - {name: researcher, system_message: Find facts.}
  - {name: critic, system_message: Check facts.}
  - {name: writer, system_message: Write the answer and end with TERMINATE.}
group: {speaker_selection: auto, max_rounds: 4}
answer_from: writer
"""


def system_of(request: dict[str, Any]) -> str:
    return " ".join(m["content"] for m in request["messages"] if m["role"] == "system")


def agent_requests(offline: OfflineServer, marker: str) -> list[dict[str, Any]]:
    """The model requests made by agents (not speaker selection) while handling ``marker``."""
    return [
        r
        for r in offline.model.requests
        if marker in json.dumps(r["messages"]) and "select the next role" not in json.dumps(r["messages"])
    ]


def test_agents_lists_the_teams(client: httpx.Client) -> None:
    teams = {t["name"]: t for t in client.get("/agents").json()["teams"]}
    assert teams["research"]["pattern"] == "pair" and teams["research"]["default"] is True
    assert [a["name"] for a in teams["research"]["agents"]] == ["research_assistant"]
    assert "calculator" in teams["research"]["agents"][0]["tools"]
    group = teams["research_team"]
    assert group["pattern"] == "group" and group["speaker_selection"] == "round_robin"
    assert [a["name"] for a in group["agents"]] == ["researcher", "critic", "writer"]
    assert group["answer_from"] == ["writer"] and group["default"] is False


def test_research_team_speaks_in_order_and_answers_with_the_writer(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "Why is the sky blue?", "agent": "research_team"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(m["role"], m["name"]) for m in body["messages"]] == [
        ("user", "user"),
        ("assistant", "researcher"),
        ("assistant", "critic"),
        ("assistant", "writer"),
    ]
    assert body["response"] == body["messages"][-1]["content"]
    assert body["finished"] is True and body["turns_used"] == 3 and body["agent"] == "research_team"
    history = client.get(f"/session/{body['session_id']}").json()
    assert history["agent"] == "research_team"
    assert [m["name"] for m in history["messages"]] == ["user", "researcher", "critic", "writer"]


def test_research_team_stream_names_each_speaker(client: httpx.Client) -> None:
    _, frames = read_frames(client, {"message": "Why is the sea salty?", "agent": "research_team"})
    speakers: list[str] = []
    for f in frames:
        if f.event == "token" and (not speakers or speakers[-1] != f.data["agent"]):
            speakers.append(f.data["agent"])
    assert speakers == ["researcher", "critic", "writer"]
    assert [f.data["agent"] for f in frames if f.event == "message"] == ["researcher", "critic", "writer"]
    # only the writer's words count as the answer; the others' are in `text`
    assert all(f.data["chunk"] == "" for f in frames if f.event == "token" and f.data["agent"] != "writer")
    assert answer(frames) == frames[-1].data["response"] != ""


def test_second_turn_of_the_group_reaches_every_agent(client: httpx.Client, offline: OfflineServer) -> None:
    first = client.post("/chat", json={"message": "first-question", "agent": "research_team"}).json()
    offline.model.reset()
    second = client.post("/chat", json={"message": "second-question", "session_id": first["session_id"]})
    assert second.status_code == 200, second.text
    requests = agent_requests(offline, "second-question")
    assert len(requests) == 3
    writer_answer = first["response"]
    for request, role in zip(requests, ("researcher", "critic", "writer"), strict=True):
        assert role in system_of(request)
        contents = [m["content"] for m in request["messages"]]
        assert "first-question" in contents and "second-question" in contents
        assert any(writer_answer in (c or "") for c in contents)
    assert "I can see 4 earlier messages" in second.json()["response"]


def test_auto_selection_follows_the_model(serve: Serve, offline: OfflineServer, tmp_path: Path) -> None:
    (tmp_path / "auto.yaml").write_text(AUTO_TEAM)
    with serve(teams_dir=tmp_path) as client:
        _, frames = read_frames(client, {"message": "pick [[speaker:writer]]", "agent": "auto_team"})
    assert frames[-1].event == "done", frames[-2:]
    token_agents = {f.data["agent"] for f in frames if f.event == "token"}
    assert token_agents == {"writer"}
    assert [f.data["agent"] for f in frames if f.event == "message"] == ["writer"]
    # the selection answers ("writer") were made by the model but never streamed
    selections = [r for r in offline.model.requests if not r.get("stream")]
    assert selections and all("select the next role" in json.dumps(r["messages"]) for r in selections)
    assert all(f.data["text"].strip() != "writer" for f in frames if f.event == "token")
    assert frames[-1].data["response"].startswith("Offline answer")


def test_tool_round_trip_in_history_and_stream(client: httpx.Client, offline: OfflineServer) -> None:
    body = {"message": 'What is 6*7? [[tool:calculator {"expression": "6*7"}]]'}
    _, frames = read_frames(client, body)
    events = [f.event for f in frames]
    call = next(f for f in frames if f.event == "tool_call").data
    result = next(f for f in frames if f.event == "tool_result").data
    assert events.index("tool_call") < events.index("tool_result")
    assert call["tool_call"]["name"] == "calculator" and json.loads(call["tool_call"]["arguments"]) == {
        "expression": "6*7"
    }
    assert result["tool_result"] == {"id": call["tool_call"]["id"], "content": "42"}
    assert frames[-1].data["response"] == "The tool returned 42."
    # the result went back to the model
    last = offline.model.requests[-1]["messages"][-1]
    assert last["role"] == "tool" and last["content"] == "42"
    history = client.get(f"/session/{frames[0].data['session_id']}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["function"]["name"] == "calculator"
    assert history[2]["content"] == "42" and history[2]["tool_call_id"] == call["tool_call"]["id"]
    # and the next turn restores the tool exchange for the model
    follow = client.post("/chat", json={"message": "thanks", "session_id": frames[0].data["session_id"]})
    assert follow.status_code == 200, follow.text
    sent = offline.model.requests[-1]["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant", "tool", "assistant", "user"]


def test_a_team_file_dropped_into_teams_dir_is_usable(serve: Serve, tmp_path: Path) -> None:
    (tmp_path / "poet.json").write_text(
        json.dumps(
            {
                "name": "poet",
                "description": "Writes short poems.",
                "pattern": "pair",
                "agents": [{"name": "poet", "system_message": "Write a haiku, then TERMINATE.", "tools": ["utc_now"]}],
            }
        )
    )
    with serve(teams_dir=tmp_path) as client:
        names = [t["name"] for t in client.get("/agents").json()["teams"]]
        assert names[:4] == ["research", "research_ac", "research_team", "research_team_ac"] and "poet" in names
        body = client.post("/chat", json={"message": "the sea", "agent": "poet"}).json()
        assert body["messages"][-1]["name"] == "poet" and body["finished"] is True


def test_a_python_plugin_team(serve: Serve) -> None:
    with serve(team_plugins="tests.utils.plugin_teams") as client:
        assert "plugin_pair" in [t["name"] for t in client.get("/agents").json()["teams"]]
        assert client.post("/chat", json={"message": "hi", "agent": "plugin_pair"}).status_code == 200


def test_a_session_stays_with_its_team(client: httpx.Client) -> None:
    sid = client.post("/chat", json={"message": "hi", "agent": "research_team"}).json()["session_id"]
    conflict = client.post("/chat", json={"message": "again", "session_id": sid, "agent": "research"})
    assert conflict.status_code == 409
    assert "research_team" in conflict.json()["detail"]
    assert client.post("/chat", json={"message": "again", "session_id": sid}).status_code == 200


def test_malformed_team_file_stops_start_up(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\ndescription: x\npattern: trio\nagents: []\n")
    with pytest.raises(TeamConfigError) as raised:
        create_app(settings_factory(teams_dir=tmp_path))
    message = str(raised.value)
    assert "broken.yaml" in message and "pattern" in message and "agents" in message


@pytest.mark.slow(seconds=5)
def test_serve_refuses_to_start_with_a_malformed_team_file(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "bad.yaml").write_text("name: bad\ndescription: x\npattern: pair\nagents:\n  - name: a\n")
    done = serve_refusing_to_start(tmp_path, {"TEAMS_DIR": str(tmp_path / "teams")})
    assert "bad.yaml" in done.stderr and "system_message" in done.stderr


@pytest.mark.slow(seconds=8)
@pytest.mark.parametrize(
    "layout",
    [{}, {"REDIS_URL": "redis://127.0.0.1:9/0"}],  # it runs agents itself; it leaves them to workers (checks apart)
    ids=["embedded", "with-workers"],
)
def test_serve_refuses_to_start_with_a_tool_it_cannot_describe(tmp_path: Path, layout: dict[str, str]) -> None:
    """A tool's schema is built by the processes that run agents; serve builds them all before it starts."""
    (tmp_path / "odd_tools.py").write_text(
        "from agent_api.agents.tools import register_tool\n\n\n"
        '@register_tool("untyped", "A tool whose parameter has no type.")\n'
        "def untyped(text):\n    return text\n\n\n"
        "def teams():\n    return []\n"
    )
    done = serve_refusing_to_start(tmp_path, {"TEAM_PLUGINS": "odd_tools:teams", **layout})
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("agent-api: cannot start: tool 'untyped'"), done.stderr
    assert "annotations are missing" in last and "'text'" in last
