"""QuietServer: uvicorn's server woken once a second and by its exit, not ten times a second."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from agent_api.offline_llm import ThreadedServer
from agent_api.serving import TICK_SECONDS, QuietServer


def _app() -> Starlette:
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])


def test_a_quiet_server_serves_wakes_once_a_second_and_stops_at_once() -> None:
    server = ThreadedServer(_app())
    quiet = server._server
    assert isinstance(quiet, QuietServer)
    ticks: list[float] = []
    on_tick = quiet.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(time.monotonic())
        return await on_tick(counter)

    quiet.on_tick = counted  # type: ignore[method-assign]
    with server:
        started = time.monotonic()
        response = httpx.get(server.url, timeout=10)
        assert response.text == "ok"
        assert email.utils.parsedate_to_datetime(response.headers["date"])  # the header its tick keeps
        time.sleep(0.5)
        elapsed = time.monotonic() - started
    # uvicorn's own loop would have ticked about 5 times in the half second.
    assert 1 <= len(ticks) <= 2 + elapsed / TICK_SECONDS, (len(ticks), elapsed)
    # stop() set its exit flag from this thread: the server woke and finished without a tick more.
    assert not server._thread.is_alive()
    assert len(ticks) <= 2 + (time.monotonic() - started) / TICK_SECONDS


def test_a_plain_uvicorn_server_is_adopted_in_place() -> None:
    plain = uvicorn.Server(uvicorn.Config(_app()))
    adopted = QuietServer.adopt(plain)
    assert adopted is plain and isinstance(plain, QuietServer)
    assert plain.should_exit is False
    plain.should_exit = True
    assert plain.should_exit is True
    assert QuietServer.adopt(adopted) is adopted
    assert QuietServer.adopt(object()) is None
    assert QuietServer.adopt(None) is None


def test_exiting_returns_for_an_exit_asked_before_or_while_it_waits() -> None:
    async def scenario() -> None:
        early = QuietServer(uvicorn.Config(_app()))
        early.should_exit = True  # before there was a loop to wake
        await asyncio.wait_for(early.exiting(), 5)

        later = QuietServer(uvicorn.Config(_app()))
        waiting = asyncio.ensure_future(later.exiting())
        await asyncio.sleep(0)
        assert not waiting.done()

        def ask_to_exit() -> None:  # as a thread that stops a server running in another one does
            later.should_exit = True

        setter = threading.Thread(target=ask_to_exit)
        setter.start()
        await asyncio.wait_for(waiting, 5)
        setter.join(5)

    asyncio.run(scenario())


def test_a_threaded_server_answers_without_nagle_delays() -> None:
    """Its connections send at once (TCP_NODELAY): with Nagle's algorithm a response written in two
    parts, head then body, waited for the client's delayed ACK, about 40 ms a request."""
    with ThreadedServer(_app()) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/").text == "ok"  # the connection stays open (keep-alive)
        connections = list(server._server.server_state.connections)
        assert connections
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
