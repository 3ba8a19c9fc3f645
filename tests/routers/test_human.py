"""Human in the loop: runs that wait for a person's message or approval, through real HTTP, a real
redis-server and the offline model (the example team files, and a plugin team whose tool has a
side effect the tests can see)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.utils import plugin_teams
from tests.utils.runs import follow, start_run, wait_for_end
from tests.utils.sse import Frame

Serve = Callable[..., AbstractContextManager[httpx.Client]]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "teams"
LAUNCH = '[[tool:launch_rocket {"payload": "satellite"}]] launch it'


@pytest.fixture
def client(serve: Serve) -> Iterator[httpx.Client]:
    with serve(teams_dir=EXAMPLES, team_plugins="tests.utils.plugin_teams") as c:
        yield c


@pytest.fixture(autouse=True)
def _no_launches() -> None:
    plugin_teams.LAUNCHES.clear()


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels (metrics are per process: compare deltas)."""
    wanted = set(labels.items())
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and wanted <= set(sample.labels.items())
    )


def next_request(client: httpx.Client, run_id: str, after: str | None = None) -> Frame:
    """The run's next ``input_request`` frame (the run waits from then on)."""
    frames = follow(client, run_id, last_event_id=after, stop_at_event="input_request")
    assert frames[-1].event == "input_request", [f.event for f in frames]
    return frames[-1]


def answer(client: httpx.Client, run_id: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.post(f"/runs/{run_id}/input", json=body, **kwargs)


def test_always_mode_asks_after_each_reply_and_keeps_the_persons_words(client: httpx.Client) -> None:
    run = start_run(client, {"agent": "concierge", "message": "Book me a table."})
    asked = next_request(client, run["run_id"])
    request = asked.data["input_request"]
    assert request["kind"] == "message" and request["agent"] == "concierge" and request["request_id"].startswith("req_")
    assert request["prompt"] == 'Offline answer: you asked "Book me a table.". I can see 0 earlier messages.'
    waiting = client.get(f"/runs/{run['run_id']}").json()
    assert waiting["status"] == "requires_input" and waiting["input_request"] == request
    listed = client.get("/runs", params={"status": "requires_input"}).json()["runs"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]

    going = answer(client, run["run_id"], {"request_id": request["request_id"], "content": "For two, at eight."})
    assert going.status_code == 200, going.text
    assert going.json()["status"] == "running" and "input_request" not in going.json()
    again = next_request(client, run["run_id"], after=asked.id).data["input_request"]
    assert again["request_id"] != request["request_id"]
    assert again["prompt"] == 'Offline answer: you asked "For two, at eight.". I can see 2 earlier messages.'
    # An empty answer after a final answer (it ended with TERMINATE) ends the conversation.
    assert answer(client, run["run_id"], {"request_id": again["request_id"], "content": ""}).status_code == 200
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded" and ended["result"]["finished"] is True
    history = client.get(f"/session/{run['session_id']}").json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Book me a table."),
        ("assistant", request["prompt"]),
        ("user", "For two, at eight."),
        ("assistant", again["prompt"]),
    ]
    frames = follow(client, run["run_id"])
    events = [f.event for f in frames]
    assert events.count("input_request") == 2 and events.count("input_response") == 2
    responses = [f.data["input_response"] for f in frames if f.event == "input_response"]
    assert responses == [
        {"request_id": request["request_id"], "kind": "message"},
        {"request_id": again["request_id"], "kind": "message"},
    ]
    # each answer comes after its request, and the person's message after the answer
    first_answer = events.index("input_response")
    assert events.index("input_request") < first_answer < events.index("done")
    person = [
        i for i, f in enumerate(frames) if f.event == "message" and f.data["message"]["content"] == "For two, at eight."
    ]
    assert person and person[0] > first_answer


def test_exit_ends_the_conversation_at_once(client: httpx.Client) -> None:
    run = start_run(client, {"agent": "concierge", "message": "Hello"})
    request = next_request(client, run["run_id"]).data["input_request"]
    answer(client, run["run_id"], {"request_id": request["request_id"], "content": "exit"})
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded"
    assert [m["role"] for m in ended["result"]["messages"]] == ["user", "assistant"]


def test_a_denied_call_never_runs_and_the_agent_reads_the_refusal(client: httpx.Client) -> None:
    run = start_run(client, {"agent": "plugin_launch", "message": LAUNCH})
    request = next_request(client, run["run_id"]).data["input_request"]
    assert request["kind"] == "approval" and request["agent"] == "launcher"
    call = request["tool_call"]
    assert call["name"] == "launch_rocket" and call["id"] and call["arguments"] == '{"payload": "satellite"}'
    assert "launch_rocket" in request["prompt"] and "satellite" in request["prompt"]
    body = {"request_id": request["request_id"], "approved": False, "reason": "Weather is bad."}
    assert answer(client, run["run_id"], body).status_code == 200
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded" and plugin_teams.LAUNCHES == []
    tool = [m for m in ended["result"]["messages"] if m["role"] == "tool"]
    assert len(tool) == 1 and tool[0]["tool_call_id"] == call["id"]
    refusal = "The user denied this call of launch_rocket; the tool was not run. Their reason: Weather is bad."
    assert tool[0]["content"] == refusal
    assert refusal in ended["result"]["response"]  # the agent saw it and answered with it
    frames = follow(client, run["run_id"])
    assert [f.data["input_response"] for f in frames if f.event == "input_response"] == [
        {"request_id": request["request_id"], "kind": "approval", "approved": False}
    ]


def test_an_approved_call_runs_once(client: httpx.Client) -> None:
    run = start_run(
        client, {"agent": "careful_calculator", "message": '[[tool:calculator {"expression": "6*7"}]] 6*7?'}
    )
    request = next_request(client, run["run_id"]).data["input_request"]
    assert request["tool_call"]["name"] == "calculator"
    assert answer(client, run["run_id"], {"request_id": request["request_id"], "approved": True}).status_code == 200
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded"
    assert [m["content"] for m in ended["result"]["messages"] if m["role"] == "tool"] == ["42"]

    launch = start_run(client, {"agent": "plugin_launch", "message": LAUNCH})
    approval = next_request(client, launch["run_id"]).data["input_request"]
    answer(client, launch["run_id"], {"request_id": approval["request_id"], "approved": True})
    assert wait_for_end(client, launch["run_id"])["status"] == "succeeded"
    assert plugin_teams.LAUNCHES == ["satellite"]


def test_answers_that_do_not_fit_are_refused_and_change_nothing(serve: Serve) -> None:
    alice, bob = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}
    with serve(teams_dir=EXAMPLES, api_keys="alice-key,bob-key") as client:
        run = start_run(
            client,
            {"agent": "careful_calculator", "message": '[[tool:calculator {"expression": "1+1"}]]'},
            headers=alice,
        )
        frames = follow(client, run["run_id"], stop_at_event="input_request", headers=alice)
        request = frames[-1].data["input_request"]
        rid, url = request["request_id"], f"/runs/{run['run_id']}/input"

        def refused(body: Any, headers: dict[str, str], status: int) -> dict[str, Any]:
            response = client.post(url, json=body, headers=headers)
            assert response.status_code == status, response.text
            return dict(response.json())

        assert refused({"request_id": rid, "approved": True}, bob, 404)["detail"].startswith("Run not found")
        wrong = refused({"request_id": "req_notthisone", "approved": True}, alice, 409)
        assert rid in wrong["detail"]
        kind = refused({"request_id": rid, "content": "yes"}, alice, 422)
        assert kind["detail"][0]["loc"] == ["body", "approved"]
        for body in (
            {"request_id": rid},
            {"request_id": rid, "approved": True, "content": "both"},
            {"request_id": rid, "approved": "yes"},
            {"request_id": rid, "content": "x", "reason": "reason without approved"},
            {"request_id": "no spaces allowed", "approved": True},
            {"request_id": rid, "approved": True, "extra": 1},
            {"request_id": rid, "content": "x" * 4001},
        ):
            refused(body, alice, 422)
        assert client.post(url, content=b"approved", headers={**alice, "Content-Type": "text/plain"}).status_code == 415
        still = client.get(f"/runs/{run['run_id']}", headers=alice).json()
        assert still["status"] == "requires_input" and still["input_request"]["request_id"] == rid

        assert client.post(url, json={"request_id": rid, "approved": True}, headers=alice).status_code == 200
        assert wait_for_end(client, run["run_id"], headers=alice)["status"] == "succeeded"
        done = refused({"request_id": rid, "approved": True}, alice, 409)
        assert "not waiting" in done["detail"] and "succeeded" in done["detail"]


def test_an_unanswered_request_fails_the_run_after_input_timeout(serve: Serve) -> None:
    with serve(teams_dir=EXAMPLES, input_timeout=1) as client:
        timeouts = metric(client, "agent_api_input_wait_seconds_count", outcome="timeout", team="concierge")
        run = start_run(client, {"agent": "concierge", "message": "Anyone there?"})
        next_request(client, run["run_id"])
        ended = wait_for_end(client, run["run_id"])
        assert ended["status"] == "failed" and ended["error"]["type"] == "input_timeout"
        assert "INPUT_TIMEOUT" in ended["error"]["detail"]
        # nothing of the turn was saved; the session takes the next one
        assert client.get(f"/session/{run['session_id']}").json()["messages"] == []
        chat = client.post("/chat", json={"message": "again", "session_id": run["session_id"], "max_turns": 1})
        assert chat.status_code == 200
        after = metric(client, "agent_api_input_wait_seconds_count", outcome="timeout", team="concierge")
        assert after == timeouts + 1


def test_a_waiting_run_is_cancelled_at_once(client: httpx.Client) -> None:
    cancels = metric(client, "agent_api_input_wait_seconds_count", outcome="cancelled", team="concierge")
    waiting = metric(client, "agent_api_runs_waiting_for_input", team="concierge")
    run = start_run(client, {"agent": "concierge", "message": "Wait for me."})
    request = next_request(client, run["run_id"]).data["input_request"]
    assert metric(client, "agent_api_runs_waiting_for_input", team="concierge") == waiting + 1
    cancelled = client.post(f"/runs/{run['run_id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    frames = follow(client, run["run_id"])
    assert frames[-1].data["run_status"] == "cancelled"
    late = answer(client, run["run_id"], {"request_id": request["request_id"], "content": "too late"})
    assert late.status_code == 409
    assert client.get(f"/session/{run['session_id']}").json()["messages"] == []
    assert metric(client, "agent_api_runs_waiting_for_input", team="concierge") == waiting
    after = metric(client, "agent_api_input_wait_seconds_count", outcome="cancelled", team="concierge")
    assert after == cancels + 1


def test_waiting_does_not_count_against_the_run_timeout(serve: Serve) -> None:
    with serve(teams_dir=EXAMPLES, run_timeout=3) as client:
        run = start_run(client, {"agent": "concierge", "message": "Take your time."})
        request = next_request(client, run["run_id"]).data["input_request"]
        time.sleep(4)  # longer than RUN_TIMEOUT, spent waiting for the person: the run still waits
        assert client.get(f"/runs/{run['run_id']}").json()["status"] == "requires_input"
        assert (
            answer(client, run["run_id"], {"request_id": request["request_id"], "content": "exit"}).status_code == 200
        )
        assert wait_for_end(client, run["run_id"])["status"] == "succeeded"


def test_the_stream_of_a_chat_carries_the_request_and_goes_on_after_the_answer(client: httpx.Client) -> None:
    with client.stream("POST", "/chat/stream", json={"agent": "concierge", "message": "Stream it."}) as response:
        lines = response.iter_lines()
        run_id = request_id = ""
        seen: list[str] = []
        event = ""
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
                seen.append(event)
            elif line.startswith("data: ") and event == "session":
                run_id = json.loads(line[6:])["run_id"]
            elif line.startswith("data: ") and event == "input_request":
                request_id = json.loads(line[6:])["input_request"]["request_id"]
                answered = client.post(f"/runs/{run_id}/input", json={"request_id": request_id, "content": "exit"})
                assert answered.status_code == 200
            elif line.startswith("data: ") and event == "done":
                assert json.loads(line[6:])["run_status"] == "succeeded"
                break
    assert seen[0] == "session" and seen[-1] == "done"
    assert seen.index("input_request") < seen.index("input_response") < seen.index("done")


def test_a_group_asks_the_person_about_its_final_answer(client: httpx.Client) -> None:
    run = start_run(client, {"agent": "reviewed_research", "message": "Why is the sea salty?"})
    asked = next_request(client, run["run_id"])
    request = asked.data["input_request"]
    assert request["agent"] == "writer" and request["kind"] == "message"
    answer(client, run["run_id"], {"request_id": request["request_id"], "content": "Add one example."})
    again = next_request(client, run["run_id"], after=asked.id).data["input_request"]
    assert again["agent"] == "writer" and "Add one example." in again["prompt"]
    answer(client, run["run_id"], {"request_id": again["request_id"], "content": ""})
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded"
    spoken = [(m["name"], m["content"]) for m in ended["result"]["messages"]]
    names = [name for name, _ in spoken]
    assert names == ["user", "researcher", "writer", "user", "researcher", "writer"]
    assert spoken[3] == ("user", "Add one example.")


def test_teams_say_where_they_ask(client: httpx.Client) -> None:
    teams = {t["name"]: t for t in client.get("/agents").json()["teams"]}
    assert teams["concierge"]["human_input"] == "always" and "approve_tools" not in teams["concierge"]
    assert teams["careful_calculator"]["approve_tools"] == ["calculator"]
    assert teams["reviewed_research"]["human_input"] == "on_terminate"
    assert "human_input" not in teams["research"] and "approve_tools" not in teams["research"]
