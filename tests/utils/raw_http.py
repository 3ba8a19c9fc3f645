"""A raw HTTP/1.1 server on a loopback port, answering each request as a test says.

For the model client's tests: what a real server does not do on demand (end a message late or
never, cut a chunk short, close a kept-alive connection, hang before answering).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

LOOPBACK = "127.0.0.1"
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"

# How a raw server answers one request: the server, the connection, its reader, the request's body.
Answer = Callable[["RawServer", socket.socket, BinaryIO, bytes], None]


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """Answers each request with ``answer``; counts connections, keeps the requests' heads.

    With ``tls`` (a server-side context), it speaks HTTPS.
    """

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed = threading.Event()  # set when a client closes a connection between requests
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen()
        self.port: int = self.listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}/v1"

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()

    def serve_connection(self, conn: socket.socket) -> None:
        with suppress(OSError):  # the client closed the connection, or refused the certificate
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self._serve_requests(conn)

    def _serve_requests(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while not self.stop.is_set():
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        self.closed.set()
                        return
                    head += line
                self.heads.append(head)
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                self.answer(self, conn, reader, reader.read(length))


@contextmanager
def raw_server(answer: Answer, tls: ssl.SSLContext | None = None) -> Iterator[RawServer]:
    server = RawServer(answer, tls)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(5)
        server.listener.close()
