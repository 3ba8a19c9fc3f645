"""The run threads' HTTP to the model: httpx's client (the OpenAI SDK's) over a lean HTTP/1.1 transport.

The OpenAI SDK takes an ``httpx.Client``; under it, httpx's own transport (httpcore, over the
pure-Python HTTP/1.1 parser h11) spends about as much CPU reading a streamed answer as the rest
of the SDK. This transport keeps a few connections per host and parses answers with httptools
(llhttp, the C parser uvicorn serves HTTP with): a request is one write of its head and body, an
answer is read with ``recv`` and parsed in C. It replaced a transport over urllib3, whose layers
(its pool manager and connection pool, the standard library's ``http.client`` and the email
package it parses headers with) were about a tenth of a one-turn conversation's CPU in the
service (docs/performance.md).

Only the transport changes: the SDK still builds, sends and reads its requests through httpx
(its headers, timeouts, retries and error handling are the same), and failures come out as the
httpx errors httpcore raises for them (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
RemoteProtocolError). A connection is reused when its answer was read to the end and neither
side asked to close it, and is checked before reuse: one the server has closed meanwhile is
replaced. A streamed answer closed right after its ``[DONE]`` event finishes its HTTP message,
within the same small budget as :mod:`agent_api.agents.model_streams`, so that its connection
is reused.

A run's cancel reaches a request in flight: :meth:`ModelTransport.abort_requests`, called from
any thread, shuts down the connections the transport's requests hold, so that a request waiting
for its answer (a whole answer, or a stream's next token) fails at once instead of when the model
answers, and refuses the transport's next requests (the SDK's retries among them) with
:class:`RequestAborted` until :meth:`ModelTransport.resume`.

httpx ignores the proxy environment variables for a client given a transport, so the model's
client takes this transport only when none is set (:func:`proxies_from_environment`).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from typing import Any

import httptools
import httpx

from agent_api.agents.model_streams import DRAIN_BYTES, DRAIN_SECONDS, AfterDone
from agent_api.tls import client_tls_context

READ_SIZE = 65536  # the most one read takes from a connection
Origin = tuple[str, str, int]  # scheme, host, port


class RequestAborted(BaseException):  # noqa: N818 - named as what happened, as KeyboardInterrupt is
    """A model request ended by :meth:`ModelTransport.abort_requests`.

    A BaseException, as asyncio's CancelledError is: the OpenAI SDK retries a request that failed
    with any Exception (after a back-off sleep), and AutoGen would report it as the model's failure.
    """


def proxies_from_environment() -> bool:
    """Whether a proxy is set in the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY; as httpx reads them)."""
    return any(scheme != "no" for scheme in urllib.request.getproxies())


class _Answer:
    """What httptools reports of one answer, as it parses it (the parser's callbacks).

    Whether the connection may be kept is asked of the parser in its callbacks: once ``feed_data``
    has returned, the parser has moved on to the next message and says no.
    """

    __slots__ = ("body", "complete", "headers", "headers_complete", "keep_alive", "parser", "reason", "version")

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_complete = False
        self.version = "1.1"
        self.keep_alive = False
        self.body: deque[bytes] = deque()
        self.complete = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_complete = True
        if self.parser is not None:
            self.version = self.parser.get_http_version()
            self.keep_alive = self.parser.should_keep_alive()

    @property
    def until_close(self) -> bool:
        """The body ends with the connection: neither a length nor chunks delimit it."""
        return not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if self.parser is not None:
            self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
            self.parser = None  # (a cycle no more)


class _Connection:
    """One HTTP/1.1 connection to an origin, and the parser of the answer being read on it."""

    __slots__ = ("answer", "answered", "origin", "parser", "poller", "sock")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock = sock
        self.origin = origin
        self.poller = select.poll()  # for the check before each reuse
        self.poller.register(sock, select.POLLIN)
        self.expect_answer()

    def expect_answer(self) -> None:
        self.answered = False  # True once its answer's head is read and its body handed out
        self.answer = _Answer()
        self.parser = self.answer.parser = httptools.HttpResponseParser(self.answer)

    def receive(self, request: httpx.Request) -> bool:
        """Read from the connection into the parser; False at the end of the connection."""
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        if not data:
            return False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise httpx.RemoteProtocolError(f"invalid answer: {exc}", request=request) from exc
        return True

    def reusable(self) -> bool:
        return self.answer.complete and self.answer.keep_alive

    def dropped(self) -> bool:
        """The server closed the idle connection (or sent on it unasked): it is not to be used again."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        return bool(self.poller.poll(0))

    def shut_down(self) -> None:
        """End the connection under a thread blocked on it: its read returns at once, as at a server's close."""
        try:
            # The plain socket's shutdown (an SSLSocket's own would drop its TLS object under the
            # thread reading it).
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed meanwhile

    def close(self) -> None:
        self.answer.parser = None
        self.sock.close()


class _Body(AfterDone, httpx.SyncByteStream):
    """An answer's body, as it arrives, for an ``httpx.Response``.

    Read to its end, the answer gives its connection back to the pool. Closed before, its
    connection is closed, unless the body stopped right after its ``[DONE]`` event: then it reads
    on to the end of the message within the drain's budget.
    """

    def __init__(self, transport: ModelTransport, conn: _Connection, request: httpx.Request) -> None:
        self._transport = transport
        self._conn = conn
        self._request = request
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        conn, answer = self._conn, self._conn.answer
        while True:
            while answer.body:
                chunk = answer.body.popleft()
                self._seen(chunk)
                yield chunk
            if answer.complete:
                break
            if not conn.receive(self._request):
                if answer.until_close:  # a body that the end of the connection ends (no length given)
                    break
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body", request=self._request
                )
        self._ended = True

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            if self._closed_after_done():
                self._finish()
        finally:
            self._transport._release(self._conn)

    def _finish(self) -> None:
        """Read the rest of the message (its terminator), within the drain's budget of time and bytes."""
        conn = self._conn
        sock = conn.sock
        timeout = sock.gettimeout()
        deadline = time.monotonic() + DRAIN_SECONDS
        read = 0
        try:
            while not conn.answer.complete:
                left = deadline - time.monotonic()
                if left <= 0 or read > DRAIN_BYTES:
                    return
                sock.settimeout(left)
                if not conn.receive(self._request):
                    return
                read += sum(len(chunk) for chunk in conn.answer.body)
                conn.answer.body.clear()
            self._ended = True
        except httpx.TransportError:
            return  # the budget ran out (a read timeout) or the connection failed: it is closed
        finally:
            sock.settimeout(timeout)  # the connection goes back to the pool as it came out


class ModelTransport(httpx.BaseTransport):
    """httpx's transport over HTTP/1.1 connections parsed by httptools: ``connections`` kept per origin."""

    def __init__(self, *, connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: the certificate checks of HTTPS connections; the process's by default.

        A request finding every kept connection in use opens another one, which is closed when it
        comes back to a full pool (httpcore would wait for one instead).
        """
        self._connections = connections
        self._ssl_context = ssl_context or client_tls_context()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._held: set[_Connection] = set()
        self._lock = threading.Lock()  # the pool is its thread's; close() and aborts come from others
        self._aborted = False
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._aborted:
            raise RequestAborted()
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        if not url.host:
            raise httpx.UnsupportedProtocol("the URL has no host", request=request)
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeout = request.extensions.get("timeout", {})
        conn = self._checkout(origin, timeout.get("connect"), request)
        try:
            self._send(conn, request, timeout.get("write"))
            conn.sock.settimeout(timeout.get("read"))
            answer = conn.answer
            while not answer.headers_complete:
                if not conn.receive(request):
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
            if request.method == "HEAD":  # no body follows, whatever its headers say
                answer.complete = True
            status = conn.parser.get_status_code()
            conn.answered = True
        except BaseException as exc:
            self._discard(conn)
            if self._aborted:
                raise RequestAborted() from exc
            raise
        extensions: dict[str, Any] = {"http_version": b"HTTP/" + answer.version.encode("ascii")}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason
        return httpx.Response(
            status,
            headers=answer.headers,
            stream=_Body(self, conn, request),
            extensions=extensions,
        )

    def _checkout(self, origin: Origin, connect_timeout: float | None, request: httpx.Request) -> _Connection:
        """A kept connection to ``origin`` the server has not closed meanwhile, else a new one; held until released."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
                if conn is not None:
                    self._held.add(conn)
            if conn is None:
                break
            if not conn.dropped():
                conn.expect_answer()
                return conn
            self._discard(conn)
        conn = _Connection(self._connect(origin, connect_timeout, request), origin)
        with self._lock:
            self._held.add(conn)
        if self._aborted:  # aborted while connecting
            self._discard(conn)
            raise RequestAborted()
        return conn

    def _connect(self, origin: Origin, timeout: float | None, request: httpx.Request) -> socket.socket:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout("timed out", request=request) from exc
        except OSError as exc:  # ssl.SSLError among them: a certificate that does not check out
            sock.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return sock

    @staticmethod
    def _send(conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        """The request's head and body, in one write."""
        body = request.read()
        if "transfer-encoding" in request.headers:  # a body httpx meant to stream: one chunk, then the end
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        head = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
        head += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
        if any(b"\r" in line or b"\n" in line for line in head):  # a header that would end the head early
            raise httpx.LocalProtocolError("a line break in the request's head", request=request)
        conn.sock.settimeout(timeout)
        try:
            conn.sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out", request=request) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

    def _release(self, conn: _Connection) -> None:
        """An answer is done with its connection: kept for the next request if it can be, else closed."""
        with self._lock:
            self._held.discard(conn)
            if conn.reusable() and not self._closed:
                idle = self._idle.setdefault(conn.origin, [])
                if len(idle) < self._connections:
                    idle.append(conn)
                    return
        conn.close()

    def _discard(self, conn: _Connection) -> None:
        with self._lock:
            self._held.discard(conn)
        conn.close()

    def abort_requests(self) -> None:
        """Make the requests in flight fail now, and refuse the next ones until :meth:`resume` (from any thread).

        The connections requests hold are shut down: a request waiting for its answer raises
        :class:`RequestAborted`; a stream's body being read raises the error of a connection the
        server closed (httpx's RemoteProtocolError). A request still connecting is refused once
        connected.
        """
        self._aborted = True
        with self._lock:
            held = list(self._held)
        for conn in held:
            conn.shut_down()

    def resume(self) -> None:
        """Send requests again after :meth:`abort_requests`."""
        self._aborted = False

    def close(self) -> None:
        """Close every connection: those of answers still being read, and of requests waiting for one, included."""
        with self._lock:
            self._closed = True
            held = list(self._held)
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in held:
            conn.shut_down()  # a request waiting for its answer fails now, and closes its connection
            if conn.answered:
                conn.close()  # an answer's body, read or left unread: closed here
        for conn in idle:
            conn.close()
