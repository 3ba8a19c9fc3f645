"""The one place the service relies on the OpenAI SDK beyond its public API.

Both engines call models through the official ``openai`` package (AG2 with ``OpenAI``,
AgentChat with ``AsyncOpenAI``). What is done to it here is checked against the installed SDK by
``tests/unit/test_openai_contract.py``; after an upgrade of ``openai``, run it first.

Nothing here imports the service's other modules: it is the bottom of the engine.
"""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
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
    (``runtime.open_engine``); a second call changes nothing.
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
