"""/v1 driven by the official ``openai`` SDK (sync and async), through real HTTP to the app, the
app through real workers to the offline model: what any OpenAI client sees when a team is its model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from agent_api.offline_llm import OfflineServer
from tests.utils.runs import ended_status
from tests.utils.waiting import abandoned

Serve = Callable[..., AbstractContextManager[httpx.Client]]
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run


def v1(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/") + "/v1"


def sdk(client: httpx.Client, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=v1(client), api_key=api_key, max_retries=0, timeout=30)


def async_sdk(client: httpx.Client, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=v1(client), api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture
def oai(client: httpx.Client) -> Iterator[openai.OpenAI]:
    with sdk(client) as c:
        yield c


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_models_are_the_teams(oai: openai.OpenAI) -> None:
    models = list(oai.models.list())
    assert {m.id for m in models} == {"research", "research_team", "research_ac", "research_team_ac"}
    assert all(m.object == "model" and m.owned_by == "agent-api" and m.created > 0 for m in models)
    assert oai.models.retrieve("research_team").id == "research_team"
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("no-such-team")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_completion_is_a_stateless_run(oai: openai.OpenAI, client: httpx.Client) -> None:
    answer = oai.chat.completions.create(model="research", messages=user("What is a tide?"))
    assert answer.object == "chat.completion" and answer.model == "research"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == 'Offline answer: you asked "What is a tide?". I can see 0 earlier messages.'
    assert (
        answer.usage is not None
        and answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens > 0
    )
    # the completion is a run, listed with the key's runs; it saved no session
    run = client.get(f"/runs/{answer.id}").json()
    assert (
        run["status"] == "succeeded"
        and run["stateless"] is True
        and run["result"]["response"] == choice.message.content
    )
    assert answer.id in [r["run_id"] for r in client.get("/runs").json()["runs"]]
    assert client.get(f"/session/{run['session_id']}").status_code == 404


def test_earlier_messages_are_the_history(oai: openai.OpenAI, offline: OfflineServer) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": [{"type": "text", "text": "Second "}, {"type": "text", "text": "question"}]},
    ]
    answer = oai.chat.completions.create(model="research", messages=messages, temperature=0.25, max_tokens=77)
    assert answer.choices[0].message.content == (
        'Offline answer: you asked "Second question". I can see 2 earlier messages.'
    )  # the offline model counts the conversation's messages, not system ones
    sent = offline.model.requests[-1]
    texts = [m.get("content") for m in sent["messages"]]
    assert "You are terse." in texts and "First question" in texts and "First answer" in texts
    # the request's model parameters go with the team's model calls
    assert sent["temperature"] == 0.25 and sent["max_tokens"] == 77


def test_finish_reason_length_when_the_team_runs_out_of_turns(oai: openai.OpenAI) -> None:
    # an answer without the stop word, and one turn only (max_turns, this service's own parameter)
    answer = oai.chat.completions.create(
        model="research", messages=user("Go on [[say:still working]]"), extra_body={"max_turns": 1}
    )
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content == "still working"


async def test_streamed_text_equals_the_completion(client: httpx.Client) -> None:
    async with async_sdk(client) as aoai:
        for team in ("research", "research_team"):
            messages = user("Describe the moon [[tokens:20]] [[latency:0:0.03]]")
            whole = await aoai.chat.completions.create(model=team, messages=messages)
            stream = await aoai.chat.completions.create(
                model=team, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            chunks: list[ChatCompletionChunk] = [chunk async for chunk in stream]
            assert chunks[0].choices[0].delta.role == "assistant"
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == whole.choices[0].message.content and text
            assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # tokens, not one block
            finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert finals == [whole.choices[0].finish_reason]
            assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
            assert len({c.id for c in chunks}) == 1


def test_stream_without_include_usage_ends_with_finish_reason(oai: openai.OpenAI, client: httpx.Client) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "research", "messages": user("hi"), "stream": True}
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "stop" and "usage" not in last


def test_session_header_continues_a_stored_session(oai: openai.OpenAI, client: httpx.Client) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="research", messages=user("Remember Mars"), extra_headers={"X-Session-ID": "new"}
    )
    session_id = raw.headers["x-session-id"]
    assert raw.parse().choices[0].message.content.endswith("I can see 0 earlier messages.")  # type: ignore[union-attr]
    # only the last message is new: the stored session is the history
    again = oai.chat.completions.create(
        model="research",
        messages=[{"role": "user", "content": "ignored, the session has it"}, *user("What did I say?")],
        extra_headers={"X-Session-ID": session_id},
    )
    assert again.choices[0].message.content == (
        'Offline answer: you asked "What did I say?". I can see 2 earlier messages.'
    )
    stored = client.get(f"/session/{session_id}").json()["messages"]
    assert [m["content"] for m in stored][::2] == ["Remember Mars", "What did I say?"]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="research", messages=user("hi"), extra_headers={"X-Session-ID": "nope"})
    with pytest.raises(openai.ConflictError):  # a session stays with its team
        oai.chat.completions.create(
            model="research_team", messages=user("hi"), extra_headers={"X-Session-ID": session_id}
        )


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"temperature": 5}, "temperature"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "result", "tool_call_id": "1"}, *user("q")]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "I speak last"}]}, "messages[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
    ],
)
def test_what_a_team_cannot_honour_is_a_bad_request_naming_the_parameter(
    oai: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "research", "messages": user("hi"), **params}
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(**body)
    error = caught.value
    assert error.status_code == 400 and error.param == param and error.type == "invalid_request_error"
    assert error.message


def test_ignored_openai_parameters_are_accepted(oai: openai.OpenAI) -> None:
    answer = oai.chat.completions.create(
        model="research",
        messages=user("hi"),
        top_p=0.9,
        seed=3,
        presence_penalty=0.1,
        user="u-42",
        metadata={"ticket": "7"},
        n=1,
        response_format={"type": "text"},
    )
    assert answer.choices[0].finish_reason == "stop"


def test_unknown_model_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


def test_auth_and_rate_limit_errors_are_the_sdk_classes(serve: Serve) -> None:
    with serve(api_keys="good-key", rate_limit="3/minute") as client:
        with sdk(client, "wrong-key") as bad, pytest.raises(openai.AuthenticationError) as caught:
            bad.models.list()
        assert caught.value.type == "authentication_error"
        with sdk(client, "good-key") as good:  # Authorization: Bearer, as every OpenAI client sends it
            good.models.list()
            good.chat.completions.create(model="research", messages=user("one"))
            assert client.get("/runs", headers={"Authorization": "Bearer good-key"}).status_code == 200
            with pytest.raises(openai.RateLimitError) as limited:
                good.chat.completions.create(model="research", messages=user("two"))
        assert int(limited.value.response.headers["retry-after"]) >= 1


def test_model_failure_is_a_server_error_without_internals(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="research", messages=user("break [[fail:500]]"))
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    assert "Traceback" not in caught.value.message and "openai" not in caught.value.message.lower()


async def test_failure_after_the_stream_started_is_an_error_chunk(client: httpx.Client) -> None:
    async with async_sdk(client) as aoai:
        stream = await aoai.chat.completions.create(
            model="research", messages=user("cut short [[tokens:30]] [[cut:5]]"), stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert received and received[0] == ""  # the role chunk came first: the 200 had gone out
    assert caught.value.code == "upstream_error"


def test_leaving_the_stream_cancels_the_run(client: httpx.Client) -> None:
    body = {"model": "research", "messages": user(f"leave {SLOW}"), "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        run_id = response.headers["x-run-id"]
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # a token arrived: the run is running; leave
    assert ended_status(client, run_id) == "cancelled"


def test_leaving_a_completion_without_stream_cancels_the_run(client: httpx.Client, offline: OfflineServer) -> None:
    # The SDK gives up after a second (its time-out closes the connection); the model would answer in 30.
    impatient = openai.OpenAI(base_url=v1(client), api_key="unused", max_retries=0, timeout=1)
    with impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="research", messages=user("gave up [[latency:30:0]]"))
    (run,) = client.get("/runs").json()["runs"]
    assert ended_status(client, run["run_id"]) == "cancelled"
    assert abandoned(offline, "gave up") == [True]  # and the model was left at once


def test_other_keys_cannot_see_completion_runs(serve: Serve) -> None:
    with serve(api_keys="alice-key,bob-key") as client, sdk(client, "alice-key") as alice:
        answer = alice.chat.completions.create(model="research", messages=user("mine"))
        bob = {"Authorization": "Bearer bob-key"}
        assert client.get(f"/runs/{answer.id}", headers=bob).status_code == 404
        assert answer.id not in [r["run_id"] for r in client.get("/runs", headers=bob).json()["runs"]]
