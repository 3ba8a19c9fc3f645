"""What agent_api/agents/openai_compat.py relies on in the installed OpenAI SDK, checked through the
SDK's real clients against an in-process transport (no network, no model)."""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

import httpx
import openai
import pytest
from openai._base_client import BaseClient
from openai._models import construct_type
from openai._streaming import AsyncStream, ServerSentEvent, Stream
from openai._utils import PropertyInfo
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from typing_extensions import TypedDict

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
    openai_compat.fast_stream_event_json()
    openai_compat.chunks_from_json()


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


def test_streamed_events_parse_to_what_json_gives_and_fail_as_it_does() -> None:
    """fast_stream_event_json replaces ServerSentEvent.json, which the SDK's streams (sync and
    async) call once per event; it gives json.loads's values, falls back to it for what orjson refuses."""
    original = getattr(ServerSentEvent.json, "__wrapped__", None)
    assert original is not None, "not installed"
    assert "sse.json()" in inspect.getsource(Stream.__stream__)
    assert "sse.json()" in inspect.getsource(AsyncStream.__stream__)
    odd = ['{"big": 123456789012345678901234567890}', '{"x": NaN, "y": -Infinity}', '{"s": "\\ud800"}', "[]", "0.1"]
    for data in [*(json.dumps(c) for c in CHUNKS), *odd]:
        parsed, expected = ServerSentEvent(data=data).json(), original(ServerSentEvent(data=data))
        assert repr(parsed) == repr(expected) and type(parsed) is type(expected)
    with pytest.raises(json.JSONDecodeError):
        ServerSentEvent(data="{not json").json()
    openai_compat.fast_stream_event_json()  # a second call changes nothing
    assert ServerSentEvent.json.__wrapped__ is original  # type: ignore[attr-defined]


def _chunk(**fields: Any) -> str:
    return json.dumps({**CHUNKS[2], **fields})


# Streams that a chunk built from its JSON must leave as the SDK's loop treats them.
STREAMS: dict[str, list[str]] = {
    "plain chunks": [json.dumps(c) for c in CHUNKS[:3]],
    "a chunk that strays from the schema, then plain ones": [json.dumps(CHUNKS[3]), *map(json.dumps, CHUNKS[:3])],
    "an error event": [json.dumps(CHUNKS[0]), json.dumps({"error": {"message": "boom"}})],
    "a chunk with an error beside it": [json.dumps(CHUNKS[0]), _chunk(error={"message": "overloaded"})],
    "a chunk with an error that is empty": [_chunk(error=None), _chunk(error="")],
    "data that is not JSON": [json.dumps(CHUNKS[0]), "{not json"],
    "events after [DONE]": [json.dumps(CHUNKS[0]), "[DONE]", json.dumps(CHUNKS[1])],
}


def _response(events: list[str], named: dict[int, str] | None = None) -> httpx.Response:
    """A server-sent event stream of ``events`` (the ``event:`` field of some, by index), readable both ways."""
    body = "".join(
        (f"event: {(named or {})[i]}\n" if i in (named or {}) else "") + f"data: {data}\n\n"
        for i, data in enumerate(events)
    )
    response = httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})
    response.request = httpx.Request("POST", "http://model.test/v1/chat/completions")
    return response


def _stream(events: list[str], named: dict[int, str] | None = None) -> Stream[ChatCompletionChunk]:
    """The SDK's stream of chat completion chunks over ``events``."""
    return Stream(cast_to=ChatCompletionChunk, response=_response(events, named), client=_client())


def _seen(chunk: Any) -> tuple[str, Any, Any]:
    return type(chunk).__name__, chunk.model_dump(), chunk.model_extra


def _outcome(stream: Stream[ChatCompletionChunk]) -> tuple[list[Any], str | None]:
    """What a consumer sees: the chunks (dumped, with their types), then the error it got, if any."""
    seen: list[Any] = []
    try:
        for chunk in stream:
            seen.append(_seen(chunk))
    except Exception as exc:  # the SDK's error, compared below
        return seen, f"{type(exc).__name__}: {exc}"
    return seen, None


async def _outcome_async(stream: AsyncStream[ChatCompletionChunk]) -> tuple[list[Any], str | None]:
    seen: list[Any] = []
    try:
        async for chunk in stream:
            seen.append(_seen(chunk))
    except Exception as exc:  # the SDK's error, compared below
        return seen, f"{type(exc).__name__}: {exc}"
    return seen, None


@pytest.mark.parametrize("case", STREAMS)
def test_chunks_built_from_json_are_what_the_sdks_loop_gives(case: str) -> None:
    """chunks_from_json replaces Stream.__stream__; each stream gives what the SDK's own loop gives."""
    original = getattr(Stream.__stream__, "__wrapped__", None)
    assert original is not None, "not installed"
    fast, sdk = _stream(STREAMS[case]), _stream(STREAMS[case])
    sdk._iterator = original(sdk)
    assert _outcome(fast) == _outcome(sdk)
    assert fast.response.is_closed and sdk.response.is_closed


@pytest.mark.parametrize("case", STREAMS)
async def test_async_chunks_built_from_json_are_what_the_sdks_loop_gives(case: str) -> None:
    """The same for AsyncStream.__stream__ (the AgentChat engine's AsyncOpenAI)."""
    original = getattr(AsyncStream.__stream__, "__wrapped__", None)
    assert original is not None, "not installed"
    client = openai.AsyncOpenAI(api_key="k", base_url="http://model.test/v1")
    fast, sdk = (
        AsyncStream(cast_to=ChatCompletionChunk, response=_response(STREAMS[case]), client=client) for _ in range(2)
    )
    sdk._iterator = original(sdk)
    assert await _outcome_async(fast) == await _outcome_async(sdk)
    assert fast.response.is_closed and sdk.response.is_closed
    await client.close()


def test_other_events_and_types_go_the_sdks_way() -> None:
    original = Stream.__stream__.__wrapped__  # type: ignore[attr-defined]
    events = [json.dumps(CHUNKS[0]), json.dumps({"error": {"message": "run failed"}}), json.dumps(CHUNKS[1])]
    named = {1: "thread.run.failed"}  # an Assistants event: never a chat chunk, the SDK's own branch
    fast, sdk = _stream(events, named), _stream(events, named)
    sdk._iterator = original(sdk)
    seen, error = _outcome(fast)
    assert (seen, error) == _outcome(sdk)
    assert len(seen) == 3 and error is None  # the SDK builds a thread event as best it can, and goes on
    body = f"data: {json.dumps(COMPLETION)}\n\n"
    response = httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    response.request = httpx.Request("POST", "http://model.test/v1/chat/completions")
    other = Stream(cast_to=ChatCompletion, response=response, client=_client())  # not a chunk stream
    assert [type(c) for c in other] == [ChatCompletion]


def test_the_sdks_stream_loop_is_what_chunks_from_json_stands_in_for() -> None:
    """It reads its events from ``_iter_events``, stops at [DONE] and closes the response at its end."""
    source = inspect.getsource(Stream.__stream__.__wrapped__)  # type: ignore[attr-defined]
    assert "self._iter_events()" in source and '"[DONE]"' in source and "response.close()" in source
    assert "self._iterator = self.__stream__()" in inspect.getsource(Stream.__init__)
    source_async = inspect.getsource(AsyncStream.__stream__.__wrapped__)  # type: ignore[attr-defined]
    assert "self._iter_events()" in source_async and "await response.aclose()" in source_async
    assert "self._iterator = self.__stream__()" in inspect.getsource(AsyncStream.__init__)
    openai_compat.chunks_from_json()  # a second call changes nothing
    assert inspect.getsource(Stream.__stream__.__wrapped__) == source  # type: ignore[attr-defined]


def test_a_completion_is_the_object_the_sdk_would_build() -> None:
    completion = _client().chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert type(completion) is ChatCompletion
    assert completion.model_dump() == construct_type(type_=ChatCompletion, value=COMPLETION).model_dump()  # type: ignore[attr-defined]
    assert completion.choices[0].message.content == "Hi"


# --- Request transforms -------------------------------------------------------------------------


class Aliased(TypedDict, total=False):
    card_id: Annotated[str, PropertyInfo(alias="cardID")]


class Nested(TypedDict, total=False):
    items: list[Aliased]


REQUESTS: list[dict[str, Any]] = [
    {
        "model": "m",
        "messages": [{"role": "user", "content": "q"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief", "name": "sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "42"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
        ],
        "temperature": 0.2,
        "max_tokens": 10,
        "response_format": {"type": "json_object"},
    },
]


@pytest.fixture
def sdk_transforms(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every typed dict the SDK's own transform walks, in order."""
    from openai._utils import _transform

    walked: list[object] = []
    original = _transform._transform_typeddict

    def counting(data: Any, expected_type: type) -> Any:
        walked.append(expected_type)
        return original(data, expected_type)

    monkeypatch.setattr(_transform, "_transform_typeddict", counting)
    openai_compat.skip_chat_request_transforms()
    return walked


def test_chat_request_parameters_have_nothing_the_transform_would_change() -> None:
    """skip_chat_request_transforms relies on the chat completion parameters having no alias or
    format anywhere (it checks, and patches nothing otherwise); the check finds them where they are."""
    from openai.types.beta import response_create_params
    from openai.types.chat import completion_create_params as params

    assert not openai_compat._transforms(params.CompletionCreateParamsStreaming, set())
    assert not openai_compat._transforms(params.CompletionCreateParamsNonStreaming, set())
    assert openai_compat._transforms(Nested, set()) and openai_compat._transforms(Aliased, set())
    assert openai_compat._transforms(response_create_params.ResponseCreateParamsBase, set())


@pytest.mark.parametrize("request_body", REQUESTS)
def test_a_chat_request_goes_without_the_transform_and_as_the_transform_sends_it(
    request_body: dict[str, Any], sdk_transforms: list[object]
) -> None:
    """The chat completions resources call maybe_transform / async_maybe_transform, names looked
    up in their module at each call; the patched ones return what the SDK's would for plain JSON
    (the parameters not given dropped) without the SDK's walk, through the real clients."""
    import asyncio

    from openai import NOT_GIVEN, Omit
    from openai.resources.chat.completions import completions as module
    from openai.types.chat import completion_create_params as params

    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=COMPLETION)

    client = openai.OpenAI(
        api_key="k", base_url="http://model.test/v1", http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    client.chat.completions.create(**{**request_body, "stream": False})
    assert sent == [{**request_body, "stream": False}] and sdk_transforms == []

    body = {**request_body, "seed": NOT_GIVEN, "user": Omit()}
    for expected_type in (params.CompletionCreateParamsStreaming, params.CompletionCreateParamsNonStreaming):
        reference = vars(module)["maybe_transform"].__wrapped__(body, expected_type)
        assert reference == request_body and sdk_transforms  # the SDK's own walk, for reference
        sdk_transforms.clear()
        assert vars(module)["maybe_transform"](body, expected_type) == reference
        assert asyncio.run(vars(module)["async_maybe_transform"](body, expected_type)) == reference
        assert sdk_transforms == []


def test_data_that_is_not_plain_json_goes_the_sdks_way(sdk_transforms: list[object]) -> None:
    from openai.resources.chat.completions import completions as module
    from openai.types.chat import completion_create_params as params

    generator_body = {"model": "m", "messages": (m for m in [{"role": "user", "content": "q"}])}
    result = vars(module)["maybe_transform"](generator_body, params.CompletionCreateParamsNonStreaming)
    assert result == {"model": "m", "messages": [{"role": "user", "content": "q"}]} and sdk_transforms
