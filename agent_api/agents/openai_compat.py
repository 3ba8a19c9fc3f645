"""The one place the service relies on the OpenAI SDK beyond its public API.

Both engines call models through the official ``openai`` package (AG2 with ``OpenAI``,
AgentChat with ``AsyncOpenAI``). What is done to it here is checked against the installed SDK by
``tests/unit/test_openai_contract.py``; after an upgrade of ``openai``, run it first.

Nothing here imports the service's other modules: it is the bottom of the engine.
"""

from __future__ import annotations

import itertools
import json
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pydantic
import pydantic_core
import typing_extensions
from openai._utils import PropertyInfo
from openai._utils._transform import get_type_hints
from openai.types.chat import ChatCompletion, ChatCompletionChunk

# The response types built with pydantic's validator: a chat completion, and each chunk of a stream.
FAST_TYPES: tuple[type[pydantic.BaseModel], ...] = (ChatCompletionChunk, ChatCompletion)


def validate_chat_responses() -> None:
    """Build chat completions and their stream chunks with pydantic's validator instead of the SDK's construct.

    The SDK turns each response body, and each chunk of a stream, into its typed object in
    ``BaseClient._process_response_data`` with ``construct_type``: a walk of the type in Python,
    runtime protocol checks included, about 95 µs per stream chunk, the largest single cost of a
    streamed token. ``model_validate`` (pydantic-core) builds the same object in about 8 µs. A body
    that does not validate (a server that strays from the schema) is built the SDK's own lenient
    way, so nothing the SDK accepted before is refused. Installed once at startup
    (``engine.open_engine``); a second call changes nothing.
    """
    from openai._base_client import BaseClient

    original = BaseClient.__dict__.get("_process_response_data")
    if original is None or hasattr(original, "__wrapped__"):  # changed upstream, or installed already
        return

    def process(self: Any, *, data: object, cast_to: type[Any], response: httpx.Response) -> Any:
        if type(data) is dict and cast_to in FAST_TYPES:
            try:
                return cast_to.model_validate(data)
            except pydantic.ValidationError:
                pass  # the SDK's way: construct what can be, validate nothing
        return original(self, data=data, cast_to=cast_to, response=response)

    process.__wrapped__ = original  # type: ignore[attr-defined]  # the original, for the contract test
    BaseClient._process_response_data = process  # type: ignore[method-assign]


def fast_stream_event_json() -> None:
    """Parse each streamed event's JSON with pydantic-core's parser instead of the standard library's.

    The SDK's ``ServerSentEvent.json`` is ``json.loads(self.data)``, once per stream chunk: about
    6 µs of a streamed token's 55-60 µs in the OpenAI client; ``pydantic_core.from_json`` (the
    parser pydantic already uses) takes under 2 µs, and gives the same values (integers of any
    size, ``NaN`` and ``Infinity`` included; orjson would turn integers beyond 64 bits into
    floats). What it refuses (a lone surrogate escape, which ``json`` accepts, or data that is not
    JSON) goes to ``json.loads`` as before: what parsed still parses, and what did not still
    raises ``json.JSONDecodeError``. Installed once at startup (``engine.open_engine``); a second
    call changes nothing.
    """
    from openai._streaming import ServerSentEvent

    original = ServerSentEvent.__dict__.get("json")
    if original is None or hasattr(original, "__wrapped__"):  # changed upstream, or installed already
        return

    def parse(self: ServerSentEvent) -> Any:
        try:
            return pydantic_core.from_json(self.data)
        except ValueError:
            return json.loads(self.data)

    parse.__wrapped__ = original  # type: ignore[attr-defined]  # the original, for the contract test
    ServerSentEvent.json = parse  # type: ignore[method-assign]


def chunks_from_json() -> None:
    """Build each chunk of a chat completion stream from its JSON in one step, with pydantic-core.

    The SDK's stream loop (``Stream.__stream__``, ``AsyncStream.__stream__``) parses each
    event's JSON into Python objects, looks for an ``error`` in them, then builds the chunk
    from them (with :func:`validate_chat_responses`, pydantic's validator):
    ``model_validate_json`` builds the same chunk straight from the JSON, without the objects in
    between, about 3.5 µs less per streamed token (of about 29 for the OpenAI client over
    urllib3; a JSON parse and a validation of 2.3 and 7.2 µs against 7.5). The first event that
    is not a plain chunk (one that does not validate, or has an ``error``, or an Assistants
    ``thread.`` event) hands it and the rest of the stream to the SDK's own loop, which treats
    it as before: an error is raised as the SDK raises it, a chunk that strays from the schema is
    built the SDK's lenient way. Streams of other types go the SDK's way. Installed once at
    startup (``engine.open_engine``); a second call changes nothing.
    """
    from openai._streaming import AsyncStream, ServerSentEvent, Stream

    original = Stream.__dict__.get("__stream__")
    original_async = AsyncStream.__dict__.get("__stream__")
    if original is None or original_async is None or hasattr(original, "__wrapped__"):
        return  # changed upstream, or installed already
    validate = ChatCompletionChunk.model_validate_json

    def ours(stream: Stream[Any] | AsyncStream[Any]) -> bool:
        synthesized = stream._options is not None and stream._options.synthesize_event_and_data
        return stream._cast_to is ChatCompletionChunk and not synthesized

    def plain_chunk(sse: ServerSentEvent) -> ChatCompletionChunk | None:
        """The event's chunk, or None for an event the SDK's loop must take."""
        if sse.event and sse.event.startswith("thread."):
            return None
        try:
            chunk = validate(sse.data)
        except ValueError:  # not JSON, or not a chunk (pydantic's ValidationError)
            return None
        return None if (chunk.model_extra or {}).get("error") else chunk

    def stream(self: Stream[Any]) -> Iterator[Any]:
        if not ours(self):
            yield from original(self)
            return
        events = self._iter_events()
        handed_over = False
        try:
            for sse in events:
                if sse.data.startswith("[DONE]"):
                    break
                chunk = plain_chunk(sse)
                if chunk is None:  # the SDK's loop takes this event and the rest, and closes the response

                    def rest(first: ServerSentEvent = sse) -> Iterator[ServerSentEvent]:
                        return itertools.chain((first,), events)

                    self._iter_events = rest  # type: ignore[method-assign]
                    handed_over = True
                    yield from original(self)
                    return
                yield chunk
        finally:
            if not handed_over:
                self.response.close()

    async def stream_async(self: AsyncStream[Any]) -> AsyncIterator[Any]:
        if not ours(self):
            async for item in original_async(self):
                yield item
            return
        events = self._iter_events()
        handed_over = False
        try:
            async for sse in events:
                if sse.data.startswith("[DONE]"):
                    break
                chunk = plain_chunk(sse)
                if chunk is None:

                    async def rest(first: ServerSentEvent = sse) -> AsyncIterator[ServerSentEvent]:
                        yield first
                        async for event in events:
                            yield event

                    self._iter_events = rest  # type: ignore[method-assign]
                    handed_over = True
                    loop = original_async(self)
                    try:
                        async for item in loop:
                            yield item
                    finally:
                        await loop.aclose()  # its own finally closes the response, also when stopped early
                    return
                yield chunk
        finally:
            if not handed_over:
                await self.response.aclose()

    stream.__wrapped__ = original  # type: ignore[attr-defined]  # the originals, for the contract test
    stream_async.__wrapped__ = original_async  # type: ignore[attr-defined]
    Stream.__stream__ = stream  # type: ignore[method-assign]
    AsyncStream.__stream__ = stream_async  # type: ignore[method-assign]


def _transforms(annotation: object, seen: set[int]) -> bool:
    """Whether the SDK's request transform could change data of this type: an alias or a format
    (``PropertyInfo``) anywhere in it, or a pydantic model the SDK would dump."""
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if typing_extensions.is_typeddict(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        return any(_transforms(hint, seen) for hint in hints.values())
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return False
    if origin is typing.Annotated:
        extras = getattr(annotation, "__metadata__", ())
        if any(isinstance(m, PropertyInfo) and (m.alias is not None or m.format is not None) for m in extras):
            return True
    return any(_transforms(arg, seen) for arg in typing.get_args(annotation))


# orjson refuses what plain JSON is not (dataclasses, dates, subclasses of the JSON types passed
# through, so they raise; generators, sets, non-string keys and other objects raise anyway).
_PLAIN_ONLY = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _plain(value: object) -> bool:
    """JSON as Python builds it: dicts with string keys, lists, strings, numbers, booleans, None."""
    try:
        orjson.dumps(value, option=_PLAIN_ONLY)
    except TypeError:
        return False
    return True


def skip_chat_request_transforms() -> None:
    """Send chat completion requests without the SDK's request transform when it would change nothing.

    The SDK passes every request's parameters through ``maybe_transform``, a walk of the data
    against the parameters' typed-dict annotations in Python, to apply aliases and formats
    (``PropertyInfo``) and to drop the parameters not given. The chat completion parameters
    have no alias or format anywhere (checked here, once, on the installed SDK; if one appears,
    nothing is patched), so for plain JSON data the transform only drops the parameters not
    given. It cost more than any other single step of a model call (about 15% of a worker's
    CPU), and grows with the conversation's history. Data that is not plain JSON (a pydantic
    model, a file, a generator) still goes the SDK's way. Installed once at startup
    (``engine.open_engine``); a second call changes nothing.
    """
    from openai._utils import is_given
    from openai.resources.chat.completions import completions as module
    from openai.types.chat import completion_create_params as params

    expected = (params.CompletionCreateParamsStreaming, params.CompletionCreateParamsNonStreaming)
    names = vars(module)  # the resource methods look these names up in their module at each call
    original, original_async = names["maybe_transform"], names["async_maybe_transform"]
    if hasattr(original, "__wrapped__") or any(_transforms(t, set()) for t in expected):
        return

    def given(data: object, expected_type: object) -> dict[str, object] | None:
        if type(data) is not dict or expected_type not in expected:
            return None
        kept = {key: value for key, value in data.items() if is_given(value)}
        return kept if _plain(kept) else None

    def fast(data: object, expected_type: object) -> Any:
        kept = given(data, expected_type)
        return kept if kept is not None else original(data, expected_type)

    async def fast_async(data: object, expected_type: object) -> Any:
        kept = given(data, expected_type)
        return kept if kept is not None else await original_async(data, expected_type)

    fast.__wrapped__ = original  # type: ignore[attr-defined]  # the originals, for the contract test
    fast_async.__wrapped__ = original_async  # type: ignore[attr-defined]
    names["maybe_transform"] = fast
    names["async_maybe_transform"] = fast_async
