"""The run threads' HTTP to the model: httpx's client (the OpenAI SDK's) sending through urllib3.

The OpenAI SDK takes an ``httpx.Client``; under it, httpx's own transport (httpcore, over the
pure-Python HTTP/1.1 parser h11) spends about as much CPU reading a streamed answer as the rest
of the SDK: measured alone, the OpenAI client spent 44 µs of CPU per streamed token over httpx's
transport and 26 µs over this one (over HTTPS 73 and 39 µs; bench/model_stream.py). urllib3
reads the same chunked body through the standard library's ``http.client`` (buffered reads in
C), and keeps a pool of connections per host as httpcore does.

Only the transport changes: the SDK still builds, sends and reads its requests through httpx
(its headers, timeouts, retries and error handling are the same), and urllib3's errors come out
as the httpx errors httpcore would raise for the same failure. A streamed answer closed right
after its ``[DONE]`` event finishes its HTTP message, within the same small budget as
:mod:`agent_api.agents.model_streams`, so that its connection is reused.

A run's cancel reaches a request in flight: :meth:`Urllib3Transport.abort_requests`, called from
any thread, shuts down the connections the transport's requests hold, so that a request waiting
for its answer (a whole answer, or a stream's next token) fails at once instead of when the model
answers, and refuses the transport's next requests (the SDK's retries among them) with
:class:`RequestAborted` until :meth:`Urllib3Transport.resume`.

httpx ignores the proxy environment variables for a client given a transport, so the model's
client takes this transport only when none is set (:func:`proxies_from_environment`).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.request
import weakref
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

from agent_api.agents.model_streams import DRAIN_BYTES, DRAIN_SECONDS, AfterDone
from agent_api.tls import client_tls_context

READ_SIZE = 65536  # the most a non-chunked body gives in one piece


class RequestAborted(BaseException):  # noqa: N818 - named as what happened, as KeyboardInterrupt is
    """A model request ended by :meth:`Urllib3Transport.abort_requests`.

    A BaseException, as asyncio's CancelledError is: the OpenAI SDK retries a request that failed
    with any Exception (after a back-off sleep), and AutoGen would report it as the model's failure.
    """


def proxies_from_environment() -> bool:
    """Whether a proxy is set in the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY; as httpx reads them)."""
    return any(scheme != "no" for scheme in urllib.request.getproxies())


def as_httpx_error(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    """The httpx error that httpx's own transport raises for the failure urllib3 reports as ``exc``."""
    error: type[httpx.TransportError]
    if isinstance(exc, (NewConnectionError, SSLError)):  # NewConnectionError is a ConnectTimeoutError too
        error = httpx.ConnectError
    elif isinstance(exc, ConnectTimeoutError):
        error = httpx.ConnectTimeout
    elif isinstance(exc, ReadTimeoutError):
        error = httpx.ReadTimeout
    elif isinstance(exc, LocationValueError):
        error = httpx.UnsupportedProtocol
    elif isinstance(exc, ProtocolError):
        error = httpx.RemoteProtocolError
    else:
        error = httpx.TransportError
    return error(str(exc), request=request)


class _Body(AfterDone, httpx.SyncByteStream):
    """A urllib3 response's body, as it arrives, for an ``httpx.Response``.

    Read to its end, the response gives its connection back to the pool (urllib3 does it). Closed
    before, its connection is closed, unless the body stopped right after its ``[DONE]`` event: then
    it reads on to the end of the message within the drain's budget.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._chunks = self._read()

    def _read(self) -> Generator[bytes]:
        response = self._response
        if response.chunked:
            yield from response.read_chunked(decode_content=False)  # each chunk as it comes
        else:
            while chunk := response.read1(READ_SIZE, decode_content=False):
                yield chunk

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self._seen(chunk)
                yield chunk
        except HTTPError as exc:
            raise as_httpx_error(exc, self._request) from exc
        self._ended = True

    def close(self) -> None:
        try:
            if self._closed_after_done():
                self._finish()
        finally:
            if not self._ended:
                self._chunks.close()  # urllib3 closes the connection of a body left unread
                self._response.close()
            self._response.release_conn()

    def _finish(self) -> None:
        """Read the rest of the message (its terminator), within the drain's budget of time and bytes."""
        sock = getattr(self._response.connection, "sock", None)
        if sock is None:
            return
        timeout = sock.gettimeout()
        deadline = time.monotonic() + DRAIN_SECONDS
        read = 0
        try:
            sock.settimeout(DRAIN_SECONDS)
            for chunk in self._chunks:
                read += len(chunk)
                left = deadline - time.monotonic()
                if read > DRAIN_BYTES or left <= 0:
                    return
                sock.settimeout(left)
            self._ended = True
        except (HTTPError, OSError):
            return  # the budget ran out (a read timeout) or the connection failed: it is closed
        finally:
            if self._ended:
                sock.settimeout(timeout)  # the connection goes back to the pool as it came out


class _HeldConnections:
    """A pool's connections while requests hold them (from checkout to return), for an abort."""

    def __init__(self) -> None:
        self._held: weakref.WeakSet[BaseHTTPConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, conn: BaseHTTPConnection) -> None:
        with self._lock:
            self._held.add(conn)

    def discard(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None:
            with self._lock:
                self._held.discard(conn)

    def shut_down(self) -> None:
        """Shut down every held connection's socket: a read blocked on it returns at once, as at a server's close."""
        with self._lock:
            held = list(self._held)
        for conn in held:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    # The plain socket's shutdown (an SSLSocket's own would drop its TLS object
                    # under the thread reading it).
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # closed meanwhile


class _HTTPPool(urllib3.HTTPConnectionPool):
    """A pool that notes in ``held`` the connections its requests take out, until they give them back."""

    held: _HeldConnections

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn = super()._get_conn(timeout)
        self.held.add(conn)
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        self.held.discard(conn)
        super()._put_conn(conn)


class _HTTPSPool(_HTTPPool, urllib3.HTTPSConnectionPool):
    """:class:`_HTTPPool` for HTTPS."""


class _Pools(urllib3.PoolManager):
    """urllib3's PoolManager, whose pools note which connections requests hold (:class:`_HeldConnections`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held = _HeldConnections()
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> urllib3.HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.held = self.held  # type: ignore[attr-defined]
        return pool


class Urllib3Transport(httpx.BaseTransport):
    """httpx's transport over a urllib3 pool: HTTP/1.1, ``connections`` kept per host."""

    def __init__(self, *, connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: the certificate checks of HTTPS connections; the process's by default."""
        # block=False: a request finding every connection in use opens another one, which is
        # closed when it comes back to a full pool (httpcore would wait for one instead).
        self._pool = _Pools(
            maxsize=connections, block=False, retries=False, ssl_context=ssl_context or client_tls_context()
        )
        self._open: weakref.WeakSet[urllib3.BaseHTTPResponse] = weakref.WeakSet()
        self._open_lock = threading.Lock()  # the pool is its thread's; close() may come from another
        self._aborted = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._aborted:
            raise RequestAborted()
        timeout = request.extensions.get("timeout", {})
        try:
            response = self._pool.urlopen(
                request.method,
                str(request.url),
                body=request.read(),
                headers=urllib3.HTTPHeaderDict(request.headers.multi_items()),
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,  # httpx decodes the body, as it does httpcore's
                timeout=urllib3.Timeout(connect=timeout.get("connect"), read=timeout.get("read")),
            )
        except HTTPError as exc:
            if self._aborted:
                raise RequestAborted() from exc
            raise as_httpx_error(exc, request) from exc
        with self._open_lock:
            self._open.add(response)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1" if response.version == 11 else b"HTTP/1.0"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        return httpx.Response(
            response.status,
            headers=list(response.headers.items()),
            stream=_Body(response, request),
            extensions=extensions,
        )

    def abort_requests(self) -> None:
        """Make the requests in flight fail now, and refuse the next ones until :meth:`resume` (from any thread).

        The connections requests hold are shut down: a request waiting for its answer raises
        :class:`RequestAborted`; a stream's body being read raises the error of a connection the
        server closed (httpx's RemoteProtocolError). A request still connecting, or taking its
        connection at that very moment, is not reached: it ends when the model answers.
        """
        self._aborted = True
        self._pool.held.shut_down()

    def resume(self) -> None:
        """Send requests again after :meth:`abort_requests`."""
        self._aborted = False

    def close(self) -> None:
        """Close every connection: those of responses still being read, and of requests waiting for one, included."""
        with self._open_lock:
            responses, self._open = list(self._open), weakref.WeakSet()
        for response in responses:
            response.close()
        self._pool.held.shut_down()  # a request waiting for its answer fails now; urllib3 then closes its connection
        self._pool.clear()
