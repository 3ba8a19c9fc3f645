"""The model's HTTP client sends through its own transport (agents/model_http.py) and behaves as httpx's own.

Through the real OpenAI client on the service's model HTTP client (llm.SharedHTTPClient): to the
offline model, and to raw HTTP/1.1 servers on loopback ports that answer, fail or hang as a test
says. The streamed answer's connection reuse is tested in test_model_streams.py, through the same
client.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.cookiejar import CookieJar
from typing import Any, BinaryIO

import httpx
import openai
import pytest
import trustme
from openai.types.chat import ChatCompletionMessageParam

from agent_api.agents.llm import SharedHTTPClient
from agent_api.agents.model_http import ModelTransport, RequestAborted
from agent_api.agents.runner import translate_model_error
from agent_api.errors import ModelError
from agent_api.offline_llm import OfflineServer
from tests.utils.raw_http import CHUNK, DONE, LOOPBACK, STREAM_HEAD, RawServer, chunked, raw_server
from tests.utils.waiting import wait_until

PATIENCE = 20.0  # how long a test waits for anything, far past what each step needs
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
}


@contextmanager
def model_client(base_url: str, *, timeout: float = PATIENCE * 2) -> Iterator[openai.OpenAI]:
    http = SharedHTTPClient(timeout=timeout)
    try:
        yield openai.OpenAI(api_key="test", base_url=base_url, http_client=http, max_retries=0)
    finally:
        http.close()


def ask(client: openai.OpenAI, *, stream: bool = True) -> str:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    if not stream:
        return client.chat.completions.create(model="m", messages=messages).choices[0].message.content or ""
    chunks = client.chat.completions.create(model="m", messages=messages, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def in_thread(call: Callable[[], object]) -> object:
    """``call()`` in a thread of its own (a pool of its own), failing the test if it takes PATIENCE."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(PATIENCE)
    assert outcome, "the call did not return"
    return outcome[0]


def test_the_model_client_sends_through_its_transport(offline: OfflineServer) -> None:
    """Streamed and whole answers from the offline model, through agents.model_http's transport."""
    with model_client(offline.base_url) as client:
        streamed, whole = ask(client), ask(client, stream=False)
        transport = client._client._thread_client()._transport  # type: ignore[attr-defined]
    assert isinstance(transport, ModelTransport)
    assert streamed and whole
    assert len({request["peer"] for request in offline.model.requests}) == 1  # one connection for both


def test_a_compressed_answer_is_decoded() -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        data = gzip.compress(json.dumps(COMPLETION).encode())
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(data), data)
        )

    with raw_server(answer) as server, model_client(server.url) as client:
        assert in_thread(lambda: ask(client, stream=False)) == "hello"
    request_line, *headers = server.heads[0].decode().split("\r\n")
    assert request_line == "POST /v1/chat/completions HTTP/1.1"
    names = [header.split(":")[0].lower() for header in headers if header]
    assert names.count("host") == 1 and "authorization" in names and "user-agent" in names


def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    idle_closed = threading.Event()

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(STREAM_HEAD + chunked(CHUNK) + chunked(DONE) + b"0\r\n\r\n")
        conn.shutdown(socket.SHUT_RDWR)  # kept alive by HTTP/1.1, then closed by the server
        idle_closed.set()

    def ask_after_the_close(client: openai.OpenAI) -> str:
        # A request sent before the close reaches the client meets a closed connection whatever
        # the transport (the SDK's retries are for that); this test is about the pool's check.
        assert idle_closed.wait(PATIENCE)
        return ask(client)

    with raw_server(answer) as server, model_client(server.url) as client:
        assert in_thread(lambda: [ask(client), ask_after_the_close(client)]) == ["hi", "hi"]
    assert server.connections == 2


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as unused:
        unused.bind((LOOPBACK, 0))
        port = unused.getsockname()[1]
    with model_client(f"http://{LOOPBACK}:{port}/v1") as client:
        error = in_thread(lambda: ask(client))
    assert isinstance(error, openai.APIConnectionError)
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_a_server_that_does_not_answer_is_a_timeout() -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        server.stop.wait(PATIENCE)

    with raw_server(answer) as server, model_client(server.url, timeout=0.5) as client:
        error = in_thread(lambda: ask(client))
    assert isinstance(error, openai.APITimeoutError)
    assert isinstance(error.__cause__, httpx.ReadTimeout)


def test_a_stream_broken_midway_is_a_model_error() -> None:
    """The OpenAI client does not wrap an error while it reads a stream: httpx's error, as with httpcore."""

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(STREAM_HEAD + chunked(CHUNK) + b"ff\r\nda")  # a chunk cut short
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(answer) as server, model_client(server.url) as client:
        error = in_thread(lambda: ask(client))
    assert isinstance(error, httpx.RemoteProtocolError)
    assert isinstance(translate_model_error(error), ModelError)


def test_closing_the_pool_closes_a_stream_being_read() -> None:
    """What SharedHTTPClient.drop_thread_pool relies on for a run cancelled in a model stream."""

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(STREAM_HEAD + chunked(CHUNK))
        conn.settimeout(PATIENCE)
        if reader.read(1) == b"":  # the client closed the connection
            server.closed.set()

    with raw_server(answer) as server:
        http = SharedHTTPClient(timeout=PATIENCE * 2)
        client = openai.OpenAI(api_key="test", base_url=server.url, http_client=http, max_retries=0)
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}], stream=True)
        first = next(iter(stream))
        http.drop_thread_pool()  # the stream is left unclosed, as a cycle would leave it
        assert server.closed.wait(PATIENCE), "the server's connection stayed open"
        http.close()
    assert first.choices[0].delta.content == "hi"


def test_cookies_are_read_only_from_answers_that_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[object] = []
    extract = CookieJar.extract_cookies

    def counted(jar: CookieJar, *args: Any) -> None:
        read.append(args)
        extract(jar, *args)

    monkeypatch.setattr(CookieJar, "extract_cookies", counted)

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        cookie = b"set-cookie: session=abc; Path=/\r\n" if len(server.heads) == 2 else b""
        data = json.dumps(COMPLETION).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (cookie, len(data), data)
        )

    def ask_twice_in_a_thread() -> dict[str, str]:
        assert ask(client, stream=False) == "hello"
        assert read == []  # no Set-Cookie: the cookie jar is not asked
        assert ask(client, stream=False) == "hello"
        return dict(client._client._thread_client().cookies)  # type: ignore[attr-defined]

    with raw_server(answer) as server, model_client(server.url) as client:
        assert in_thread(ask_twice_in_a_thread) == {"session": "abc"}
    assert len(read) == 1


def test_closing_the_pool_ends_a_request_waiting_for_its_answer() -> None:
    """A run thread still waiting on the model when the service stops (SharedHTTPClient.close) is let go."""

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        server.stop.wait(PATIENCE)

    with raw_server(answer) as server:
        http = SharedHTTPClient(timeout=PATIENCE * 2)
        client = openai.OpenAI(api_key="test", base_url=server.url, http_client=http, max_retries=0)
        errors: list[Exception] = []

        def waiting() -> None:
            try:
                ask(client, stream=False)
            except Exception as exc:  # handed to the test
                errors.append(exc)

        worker = threading.Thread(target=waiting, daemon=True)
        worker.start()
        wait_until(lambda: len(server.heads) == 1)
        http.close()
        worker.join(PATIENCE)
    assert isinstance(errors[0], openai.APIConnectionError)


def _abortable_asks(
    http: SharedHTTPClient, asks: Sequence[Callable[[], object]], after: Sequence[Callable[[], object]] = ()
) -> tuple[Callable[[], None], list[object]]:
    """In a thread of its own: ``asks`` inside ``http.abortable()``, then its abort called, then ``after``.

    Gives the abort (for the test to call meanwhile) and the outcomes, appended as they come: an
    answer, or whatever the call raised (BaseExceptions included).
    """
    aborts: list[Callable[[], None]] = []
    ready = threading.Event()
    outcomes: list[object] = []

    def outcome(call: Callable[[], object]) -> object:
        try:
            return call()
        except BaseException as exc:  # noqa: BLE001 - RequestAborted is one, handed to the test
            return exc

    def run() -> None:
        with http.abortable() as abort:
            aborts.append(abort)
            ready.set()
            outcomes.extend(outcome(call) for call in asks)
        abort()  # the block has ended: nothing to abort
        outcomes.extend(outcome(call) for call in after)

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(PATIENCE)
    return aborts[0], outcomes


def test_an_abort_ends_a_request_waiting_for_its_answer_and_refuses_retries() -> None:
    """What a run's cancel does to the model call its thread waits on (SharedHTTPClient.abortable)."""

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        server.stop.wait(PATIENCE)  # the model thinks, and thinks

    with raw_server(answer) as server:
        http = SharedHTTPClient(timeout=PATIENCE * 2)
        # The SDK's retries are on: an aborted request must not be sent again.
        client = openai.OpenAI(api_key="test", base_url=server.url, http_client=http, max_retries=2)
        abort, outcomes = _abortable_asks(http, [lambda: ask(client, stream=False)])
        wait_until(lambda: len(server.heads) == 1)
        abort()
        wait_until(lambda: len(outcomes) == 1)
        http.close()
    assert isinstance(outcomes[0], RequestAborted)
    assert len(server.heads) == 1


def test_an_abort_ends_a_stream_then_lasts_until_the_block_ends() -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        if len(server.heads) == 1:  # the first: a token, then nothing
            conn.sendall(STREAM_HEAD + chunked(CHUNK))
            server.stop.wait(PATIENCE)
        else:
            conn.sendall(STREAM_HEAD + chunked(CHUNK) + chunked(DONE) + b"0\r\n\r\n")

    first_token = threading.Event()

    def read_on(client: openai.OpenAI) -> str:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
        for _ in client.chat.completions.create(model="m", messages=messages, stream=True):
            first_token.set()
        return "read to the end"

    with raw_server(answer) as server:
        http = SharedHTTPClient(timeout=PATIENCE * 2)
        client = openai.OpenAI(api_key="test", base_url=server.url, http_client=http, max_retries=0)
        abort, outcomes = _abortable_asks(
            http, [lambda: read_on(client), lambda: ask(client)], after=[lambda: ask(client)]
        )
        assert first_token.wait(PATIENCE)
        abort()
        wait_until(lambda: len(outcomes) == 3)
        http.close()
    assert isinstance(outcomes[0], httpx.RemoteProtocolError)  # the stream's connection, shut down
    assert isinstance(outcomes[1], RequestAborted)  # the next call, refused before it is sent
    # Once the block has ended the thread's requests go out again, and its abort does nothing.
    assert outcomes[2] == "hi"
    assert len(server.heads) == 2


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA, hostname: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(context)
    return context


def _ask_over(transport: ModelTransport, server: RawServer, times: int = 1) -> object:
    """ask() ``times`` in one thread through ``transport``: the answers, or the first error."""
    http = httpx.Client(transport=transport, timeout=PATIENCE)
    client = openai.OpenAI(api_key="test", base_url=server.url, http_client=http, max_retries=0)
    try:
        return in_thread(lambda: [ask(client) for _ in range(times)])
    finally:
        http.close()


def _answer_hi(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
    conn.sendall(STREAM_HEAD + chunked(CHUNK) + chunked(DONE) + b"0\r\n\r\n")


def test_https_with_a_trusted_certificate(ca: trustme.CA) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with raw_server(_answer_hi, _server_tls(ca, LOOPBACK)) as server:
        assert server.url.startswith("https://")
        assert _ask_over(ModelTransport(connections=1, ssl_context=trusting), server, times=2) == ["hi", "hi"]
    assert server.connections == 1


@pytest.mark.parametrize("case", ["unknown CA", "another host's certificate"])
def test_https_checks_the_certificate(ca: trustme.CA, case: str) -> None:
    """Refused as httpx refuses it: a ConnectError, which the OpenAI client reports as a connection error."""
    if case == "unknown CA":  # the process's own context: certifi's CAs, not this test's
        transport = ModelTransport(connections=1)
        server_tls = _server_tls(ca, LOOPBACK)
    else:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        transport = ModelTransport(connections=1, ssl_context=trusting)
        server_tls = _server_tls(ca, "model.example")
    with raw_server(_answer_hi, server_tls) as server:
        error = _ask_over(transport, server)
    assert isinstance(error, openai.APIConnectionError)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert server.heads == []  # no request went out


def test_with_a_proxy_in_the_environment_the_pools_are_httpx_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours HTTP_PROXY only for a client without a transport of its own."""

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(STREAM_HEAD + chunked(CHUNK) + chunked(DONE) + b"0\r\n\r\n")

    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with raw_server(answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{LOOPBACK}:{proxy.port}")
        with model_client("http://model.invalid/v1") as client:
            assert in_thread(lambda: ask(client)) == "hi"
    assert proxy.heads[0].startswith(b"POST http://model.invalid/v1/chat/completions HTTP/1.1")


def test_an_answer_that_closes_its_connection_is_not_reused() -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        data = json.dumps(COMPLETION).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(data), data)
        )
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(answer) as server, model_client(server.url) as client:
        assert in_thread(lambda: [ask(client, stream=False), ask(client, stream=False)]) == ["hello", "hello"]
    assert server.connections == 2


def test_a_body_without_a_length_ends_with_its_connection() -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + json.dumps(COMPLETION).encode())
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(answer) as server, model_client(server.url) as client:
        assert in_thread(lambda: ask(client, stream=False)) == "hello"


@pytest.mark.parametrize(
    ("sent", "detail"),
    [(b"", "without sending a response"), (b"HTTP/1.1 abc\r\n\r\n", "invalid answer")],
    ids=["nothing", "not HTTP"],
)
def test_a_server_that_does_not_answer_in_http_is_a_protocol_error(sent: bytes, detail: str) -> None:
    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(sent)
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(answer) as server, model_client(server.url) as client:
        error = in_thread(lambda: ask(client))
    assert isinstance(error, openai.APIConnectionError)
    assert isinstance(error.__cause__, httpx.RemoteProtocolError) and detail in str(error.__cause__)


def test_only_http_and_https_are_sent() -> None:
    transport = ModelTransport(connections=1)
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.handle_request(httpx.Request("POST", "ftp://127.0.0.1/v1/chat/completions"))


def test_a_header_with_a_line_break_is_not_sent() -> None:
    with raw_server(_answer_hi) as server:
        transport = ModelTransport(connections=1)
        request = httpx.Request("POST", f"{server.url}/chat/completions", headers={"x-note": "a\r\nx-injected: 1"})
        with pytest.raises(httpx.LocalProtocolError):
            transport.handle_request(request)
        transport.close()
    assert server.heads == []
