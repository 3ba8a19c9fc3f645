"""The OpenAI protocol's pure parts: messages to a team's conversation, run frames to chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from agent_api.models.chat import MAX_MESSAGE_CHARS
from agent_api.protocols import openai as oai


def messages(*items: dict[str, Any]) -> list[oai.InputMessage]:
    return [oai.InputMessage.model_validate(m) for m in items]


def test_conversation_splits_history_from_the_new_message() -> None:
    conv = oai.conversation(
        messages(
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1", "name": "someone"},
            {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "2"}]},
        ),
        answerer="writer",
    )
    assert conv.message == "q2"
    assert [(m.role, m.content, m.name) for m in conv.history] == [
        ("system", "be brief", None),
        ("user", "q1", "user"),
        ("assistant", "a1", "writer"),  # attributed to the team's answering agent
    ]


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages[1]"),
        ([{"role": "user", "content": " \n"}], "messages[0].content"),
        ([{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}], "messages[0].content"),
    ],
)
def test_conversations_a_team_cannot_take_name_the_parameter(items: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(oai.ChatCompletionRequestError) as caught:
        oai.conversation(messages(*items), answerer="writer")
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"messages": [{"role": "tool", "content": "r"}]}, "role"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "content"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]}, "tool_calls"),
        ({"temperature": "0.5"}, "temperature"),  # strict: a string is not a number
    ],
)
def test_what_a_team_cannot_honour_is_refused_by_the_request_model(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        oai.ChatCompletionRequest.model_validate({"model": "t", "messages": [{"role": "user", "content": "q"}], **body})
    assert [e["loc"][-1] for e in caught.value.errors()] == [field]


def test_values_that_change_nothing_are_accepted() -> None:
    body = {
        "n": 1,
        "tools": [],
        "tool_choice": "none",
        "logprobs": False,
        "response_format": {"type": "text"},
        "modalities": ["text"],
        "top_p": 0.5,
        "seed": 1,
        "frequency_penalty": 0.2,
    }
    oai.ChatCompletionRequest.model_validate({"model": "t", "messages": [{"role": "user", "content": "q"}], **body})


def test_params_and_metadata() -> None:
    request = oai.ChatCompletionRequest.model_validate(
        {
            "model": "t",
            "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 9,
            "temperature": 0,
            "user": "u1",
            "metadata": {"k": "v"},
        }
    )
    assert oai.llm_params(request) == {"max_tokens": 9, "temperature": 0}
    assert oai.run_metadata(request) == {"k": "v", "user": "u1"}
    newer = request.model_copy(update={"max_completion_tokens": 5})
    assert oai.llm_params(newer)["max_tokens"] == 5


def test_param_names_follow_openai() -> None:
    assert oai.param_of(["body", "messages", 2, "content"]) == "messages[2].content"
    assert oai.param_of(["body", "temperature"]) == "temperature"
    assert oai.param_of(["body"]) is None


def frame(event: str, **data: Any) -> tuple[str, str]:
    return event, json.dumps({"session_id": "s", "chunk": "", "done": False, **data})


def test_chunks_carry_only_the_answer_then_finish_and_usage() -> None:
    encoder = oai.ChunkEncoder("run_1", 1700000000, "team", include_usage=True)
    lines = encoder.start()
    for event, data in [
        frame("session", run_id="run_1"),
        frame("token", agent="researcher", text="notes", chunk=""),  # another agent's words
        frame("token", agent="writer", text="Hel", chunk="Hel"),
        frame("message", agent="writer"),
        frame("token", agent="writer", text="lo", chunk="lo"),
        frame("usage", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        frame(
            "done",
            done=True,
            run_status="succeeded",
            finished=False,
            usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        ),
        frame("token", chunk="late"),  # nothing after the end
    ]:
        lines += encoder.feed(event, data)
    chunks = [ChatCompletionChunk.model_validate_json(line) for line in lines]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (
            [
                frame("error", detail="The model failed.", status=502, error_type="upstream_error"),
                frame("done", done=True, run_status="failed"),
            ],
            "upstream_error",
        ),
        ([frame("done", done=True, run_status="cancelled")], "cancelled"),
    ],
)
def test_a_run_that_does_not_succeed_ends_with_an_error_chunk(frames: list[tuple[str, str]], code: str) -> None:
    encoder = oai.ChunkEncoder("run_1", 1, "team", include_usage=True)
    lines = [line for event, data in frames for line in encoder.feed(event, data)]
    assert len(lines) == 1
    error = json.loads(lines[0])["error"]
    assert error["code"] == code and error["message"] and error["type"] in ("server_error", "invalid_request_error")
