"""What agent_api/agents/openai_compat.py relies on in the installed OpenAI SDK, checked through the
SDK's real clients against an in-process transport (no network, no model)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx
import openai
import pytest
from openai._base_client import BaseClient
from openai._models import construct_type
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agent_api.agents import openai_compat

CHUNKS: list[dict[str, Any]] = [
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "f"}}]},
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "x_vendor_field": {"kept": True},
    },
    # A server that strays from the schema: no "created", a finish reason the SDK does not know.
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "odd"}],
    },
]
COMPLETION: dict[str, Any] = {
    "id": "r1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _handler(request: httpx.Request) -> httpx.Response:
    if json.loads(request.content).get("stream"):
        body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in CHUNKS) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=COMPLETION)


def _client() -> openai.OpenAI:
    return openai.OpenAI(
        api_key="k", base_url="http://model.test/v1", http_client=httpx.Client(transport=httpx.MockTransport(_handler))
    )


@pytest.fixture(autouse=True, scope="module")
def installed() -> None:
    openai_compat.validate_chat_responses()


def test_the_sdk_builds_responses_in_one_method_of_its_base_client() -> None:
    """validate_chat_responses replaces BaseClient._process_response_data, which the SDK's streams and
    responses call with keyword arguments data, cast_to and response (sync and async clients alike)."""
    original = getattr(BaseClient._process_response_data, "__wrapped__", None)
    assert original is not None, "not installed"
    params = inspect.signature(original).parameters
    assert [p for p in params if p != "self"] == ["data", "cast_to", "response"]
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in ("data", "cast_to", "response"))
    assert issubclass(openai.AsyncOpenAI, BaseClient) and issubclass(openai.OpenAI, BaseClient)
    openai_compat.validate_chat_responses()  # a second call changes nothing
    assert BaseClient._process_response_data.__wrapped__ is original  # type: ignore[attr-defined]


def test_stream_chunks_are_the_objects_the_sdk_would_build() -> None:
    chunks = list(
        _client().chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True)
    )
    assert [type(c) for c in chunks] == [ChatCompletionChunk] * len(CHUNKS)
    for chunk, raw in zip(chunks, CHUNKS, strict=True):
        expected = construct_type(type_=ChatCompletionChunk, value=raw)
        assert chunk.model_dump() == expected.model_dump()  # type: ignore[attr-defined]
    assert chunks[1].choices[0].delta.tool_calls is not None
    assert chunks[1].choices[0].delta.tool_calls[0].function is not None
    assert chunks[1].choices[0].delta.tool_calls[0].function.name == "f"
    assert chunks[2].choices[0].delta.content == "Hello" and chunks[2].usage is not None
    assert chunks[2].usage.total_tokens == 4
    assert chunks[2].model_extra == {"x_vendor_field": {"kept": True}}  # extra fields kept, as the SDK does
    assert str(chunks[3].choices[0].finish_reason) == "odd"  # built the SDK's lenient way, not refused


def test_a_completion_is_the_object_the_sdk_would_build() -> None:
    completion = _client().chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert type(completion) is ChatCompletion
    assert completion.model_dump() == construct_type(type_=ChatCompletion, value=COMPLETION).model_dump()  # type: ignore[attr-defined]
    assert completion.choices[0].message.content == "Hi"
