"""A model's streamed answer that gives its connection back to the pool when it is done.

The OpenAI SDK stops reading a stream at its last server-sent event, ``data: [DONE]``, and
closes the response (``openai._streaming.Stream``). The HTTP message has not ended there: the
chunked body's terminator (``0\\r\\n\\r\\n``) comes after the event. httpcore closes a response
whose message did not end by closing its connection, so every streamed model call opened a new
connection, and against an HTTPS provider paid a TCP and TLS handshake (their round trips before
the request, and the handshake's CPU). It is a known issue of the SDK (openai/openai-python#3440,
open), whose maintainers prefer it handled in the transport.

Here, a stream that is closed right after its ``[DONE]`` event reads on to the end of the HTTP
message, within a small budget of time and bytes, so that the connection is reused. A server that
does not end the message within the budget (one that keeps the connection open, or sends
keep-alive comments after ``[DONE]``) costs at most that budget, and its connection is closed as
before. A stream closed before its ``[DONE]`` (an error, a cancelled run) is closed at once.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

DONE_EVENT = b"data: [DONE]"
# How long, and how many bytes, a stream closed after [DONE] may read to reach the end of its
# HTTP message. The terminator is written with the last event (usually in the same packet).
DRAIN_SECONDS = 0.25
DRAIN_BYTES = 4096
_TAIL = 32  # bytes of the body kept to recognise its last event


def _ends_with_done(tail: bytes) -> bool:
    return tail.rstrip(b"\r\n").endswith(DONE_EVENT)


def _event_stream(response: httpx.Response) -> Any:
    """The response's network stream if it is a server-sent event stream over HTTP/1.1, else None.

    (Over HTTP/2 a stream closed early leaves its connection open, and the connection's network
    stream is shared by other requests.)
    """
    if response.http_version != "HTTP/1.1":
        return None
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return None
    return response.extensions.get("network_stream")


class _Budget:
    """Reads of a network stream bounded by one deadline, while a stream finishes its message.

    The connection reads the body through its network stream with the request's read timeout
    (``read(max_bytes, timeout)``, httpcore's network stream interface); for the drain, the
    stream's ``read`` is shadowed by one whose timeout is what is left of the budget, so that a
    read past it fails as a read timeout, which closes the connection.
    """

    def __init__(self, network: Any) -> None:
        self.network = network
        self.deadline = time.monotonic() + DRAIN_SECONDS

    def left(self, timeout: float | None) -> float:
        left = max(self.deadline - time.monotonic(), 0.001)
        return left if timeout is None else min(timeout, left)

    def __enter__(self) -> bool:
        """Shadow the stream's ``read``; False (nothing changed) if the stream does not allow it."""
        read = self.network.read
        if inspect.iscoroutinefunction(read):

            async def bounded_async(max_bytes: int, timeout: float | None = None) -> bytes:
                data: bytes = await read(max_bytes, self.left(timeout))
                return data

            bounded: Any = bounded_async
        else:

            def bounded(max_bytes: int, timeout: float | None = None) -> bytes:
                data: bytes = read(max_bytes, self.left(timeout))
                return data

        try:
            self.network.read = bounded
        except (AttributeError, TypeError):  # a network stream without an instance dict
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if hasattr(self.network, "__dict__"):
            vars(self.network).pop("read", None)


class AfterDone:
    """What the sync and async bodies share: the body's last bytes, and whether its message ended."""

    _tail = b""
    _ended = False

    def _seen(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-_TAIL:]

    def _closed_after_done(self) -> bool:
        """Closed after its last event, with the rest of the message (its terminator) still to read."""
        return not self._ended and _ends_with_done(self._tail)


class ReusableEventStream(AfterDone, httpx.SyncByteStream):
    """A streamed response's body that, closed after its ``[DONE]`` event, finishes its HTTP message."""

    def __init__(self, body: httpx.SyncByteStream, network: Any) -> None:
        self._body = body
        self._chunks = iter(body)
        self._network = network

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._seen(chunk)
            yield chunk
        self._ended = True

    def close(self) -> None:
        try:
            if self._closed_after_done():
                self._finish()
        finally:
            self._body.close()

    def _finish(self) -> None:
        read = 0
        try:
            with _Budget(self._network) as bounded:
                if not bounded:
                    return
                for chunk in self._chunks:
                    read += len(chunk)
                    if read > DRAIN_BYTES:
                        return
        except httpx.HTTPError:
            return  # the budget ran out (a read timeout) or the connection failed: it is closed
        self._ended = True


class AsyncReusableEventStream(AfterDone, httpx.AsyncByteStream):
    """:class:`ReusableEventStream` for an async client."""

    def __init__(self, body: httpx.AsyncByteStream, network: Any) -> None:
        self._body = body
        self._chunks = body.__aiter__()
        self._network = network

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self._seen(chunk)
            yield chunk
        self._ended = True

    async def aclose(self) -> None:
        try:
            if self._closed_after_done():
                await self._finish()
        finally:
            await self._body.aclose()

    async def _finish(self) -> None:
        read = 0
        try:
            with _Budget(self._network) as bounded:
                if not bounded:
                    return
                async for chunk in self._chunks:
                    read += len(chunk)
                    if read > DRAIN_BYTES:
                        return
        except httpx.HTTPError:
            return
        self._ended = True


def reusable(response: httpx.Response) -> httpx.Response:
    """``response`` (streamed, not yet read) with a body that finishes its message after ``[DONE]``."""
    network = _event_stream(response)
    if network is not None:
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = ReusableEventStream(response.stream, network)
        elif isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = AsyncReusableEventStream(response.stream, network)
    return response


class ModelAsyncClient(httpx.AsyncClient):
    """The async HTTP client of the engines that run in the event loop: streamed answers reuse their connection."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await super().send(request, **kwargs)
        return reusable(response) if kwargs.get("stream") else response
