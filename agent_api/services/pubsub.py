"""Listening on a Redis pub/sub channel for the life of a process, through idle hours and restarts.

redis-py's ``PubSub.listen`` reads under the client's socket timeout: on a channel that stays
quiet longer than that (the service's clients time out after REDIS_TIMEOUT, 5 s), every read
times out and redis-py silently reconnects and subscribes again, and whatever was published
in between is lost. :func:`listen` waits for messages without that timeout instead, checks an
idle connection with a PING (a connection whose peer vanished would otherwise wait forever), and
tells its caller each time it is subscribed (again), so that the caller can look up what it may
have missed while it was not. :class:`Fanout` does the same for many channels over one
connection, subscribed while somebody watches them (the followers of runs' event streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import redis.asyncio as redis
from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

# A connection silent this long gets a PING; silent for as long again after it, it is given up.
IDLE_SECONDS = 30.0
# After losing the connection, the wait before subscribing again.
RETRY_SECONDS = 1.0


class Unanswered(Exception):
    """The server did not answer a PING on the subscribed connection."""


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data


async def _messages(pubsub: PubSub, idle: float) -> AsyncIterator[dict[str, Any]]:
    """What a subscribed connection receives, for as long as it lives. Reads wait at most ``idle``
    seconds: then a PING, and :class:`Unanswered` if nothing comes for as long again."""
    pinged = False
    while True:
        message = await pubsub.get_message(timeout=idle)
        if message is None:
            if pinged:
                raise Unanswered()
            await pubsub.ping()
            pinged = True
            continue
        pinged = False
        yield message


async def listen(
    client: redis.Redis,
    channel: str,
    on_message: Callable[[str], None],
    *,
    on_subscribed: Callable[[], None] | None = None,
    name: str = "listener",
    idle: float = IDLE_SECONDS,
    retry: float = RETRY_SECONDS,
) -> NoReturn:
    """Call ``on_message`` with the data of each message published on ``channel``, until cancelled.

    ``on_subscribed`` is called once the server has confirmed each subscription: the first one,
    and each after a lost connection (redis-py's own reconnection included). Messages published
    before that confirmation were not received; messages published after it will be.
    """
    fanout = Fanout(
        client, channel, on_message=on_message, on_subscribed=on_subscribed, name=name, idle=idle, retry=retry
    )
    await fanout.run()


# What a watcher's queue can hold besides a published message (parsed by the fanout's ``parse``).
MISSED = "missed"  # messages may have been missed (subscribed again after a lost connection): look again
LOST = "lost"  # the fanout lost its connection: no more messages come to this watcher


class Watch:
    """One watcher of one channel: the channel's messages, parsed, in the order they were published."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[object] = asyncio.Queue()
        self.ready = asyncio.Event()  # the subscription is confirmed (or lost): every later message arrives
        self.lost = False  # the fanout lost its connection: no more messages come to this watcher


class Fanout:
    """Many watchers of many channels over one pub/sub connection of this process.

    A channel is subscribed while somebody watches it (the first watcher subscribes, the last
    unsubscribes); each message is parsed once (``parse``) and queued for every watcher of its
    channel. Besides, the fanout always listens on ``home``, so that it knows its connection is up
    before anybody watches: ``on_message`` gets what is published there, and ``on_subscribed`` is
    called each time that subscription is confirmed (:func:`listen` is a fanout with no
    watchers). A watcher that needs everything (a log it follows) reads what came before its
    subscription was confirmed, then takes the messages; it reads again on :data:`MISSED`, and
    gives up the fanout on :data:`LOST`.
    """

    def __init__(
        self,
        client: redis.Redis,
        home: str,
        parse: Callable[[str], object] = str,
        *,
        on_message: Callable[[str], None] | None = None,
        on_subscribed: Callable[[], None] | None = None,
        name: str = "fanout",
        idle: float = IDLE_SECONDS,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self._client = client
        self._home = home
        self._parse = parse
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._name = name
        self._idle = idle
        self._retry = retry
        self._pubsub: PubSub | None = None
        self._up = False  # subscribed to home on the current connection
        self._watchers: dict[str, set[Watch]] = {}
        self._confirmed: set[str] = set()  # watched channels whose subscription is confirmed
        self._outstanding: dict[str, int] = {}  # (un)subscribe commands sent, not yet answered

    @property
    def up(self) -> bool:
        return self._up

    async def run(self) -> NoReturn:
        """Listen, and subscribe again after a lost connection (runs until cancelled)."""
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    self._outstanding.clear()
                    self._confirmed.clear()
                    channels = [self._home, *self._watchers]
                    for channel in channels:
                        self._sent(channel)
                    await pubsub.subscribe(*channels)
                    self._pubsub = pubsub
                    await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away or stopped answering: subscribe again once it is back
                log.warning("%s lost its connection to Redis (%s); subscribing again", self._name, type(exc).__name__)
            finally:
                self._pubsub = None
                self._up = False
                self._lose_all()
            await asyncio.sleep(self._retry)

    async def _listen(self, pubsub: PubSub) -> None:
        async for message in _messages(pubsub, self._idle):
            kind = _text(message["type"])
            channel = _text(message["channel"]) if message.get("channel") is not None else ""
            if kind == "message" and channel == self._home:
                if self._on_message is not None:
                    self._on_message(_text(message["data"]))
            elif kind == "message":
                watchers = self._watchers.get(channel)
                if watchers:
                    try:
                        parsed = self._parse(_text(message["data"]))
                    except Exception:  # not what the publishers send: the watchers look for themselves
                        log.warning("fanout: a message on %s could not be read", channel)
                        parsed = MISSED
                    for watch in watchers:
                        watch.messages.put_nowait(parsed)
            elif kind == "subscribe":
                self._answered(channel)
                self._subscribed(channel)
            elif kind == "unsubscribe":
                self._answered(channel)
                self._confirmed.discard(channel)

    def _sent(self, channel: str) -> None:
        self._outstanding[channel] = self._outstanding.get(channel, 0) + 1

    def _answered(self, channel: str) -> None:
        left = self._outstanding.get(channel, 0) - 1
        if left > 0:
            self._outstanding[channel] = left
        else:
            self._outstanding.pop(channel, None)

    def _subscribed(self, channel: str) -> None:
        if channel == self._home:
            if self._up:  # redis-py reconnected by itself and subscribed again: messages may be lost
                for each in self._watchers.values():
                    for watch in each:
                        if watch.ready.is_set():
                            watch.messages.put_nowait(MISSED)
            self._up = True
            if self._on_subscribed is not None:
                self._on_subscribed()
            return
        watchers = self._watchers.get(channel)
        if not watchers or channel in self._outstanding:
            return  # nobody watches it any more, or a later (un)subscribe is still on its way
        self._confirmed.add(channel)
        for watch in watchers:
            watch.ready.set()

    def _lose_all(self) -> None:
        self._confirmed.clear()
        for watchers in self._watchers.values():
            for watch in watchers:
                watch.lost = True
                watch.ready.set()  # a watcher still waiting for its confirmation stops waiting
                watch.messages.put_nowait(LOST)

    @asynccontextmanager
    async def watching(self, channel: str, timeout: float) -> AsyncIterator[Watch | None]:
        """Watch ``channel`` for the block: the watch once its subscription is confirmed, or None
        if the fanout is down, loses its connection first, or the confirmation does not come within
        ``timeout`` seconds."""
        watch = Watch()
        watchers = self._watchers.setdefault(channel, set())
        first = not watchers
        watchers.add(watch)
        try:
            yield watch if await self._confirm(channel, watch, first, timeout) else None
        finally:
            await self._unwatch(channel, watch)

    async def _confirm(self, channel: str, watch: Watch, first: bool, timeout: float) -> bool:
        pubsub = self._pubsub
        if pubsub is None or not self._up:
            return False
        if first:
            self._sent(channel)
            try:
                await pubsub.subscribe(channel)
            except Exception:  # the connection is going: the fanout's loop reconnects
                return False
        elif channel in self._confirmed:
            watch.ready.set()
        try:
            await asyncio.wait_for(watch.ready.wait(), timeout)
        except TimeoutError:
            return False
        return not watch.lost

    async def _unwatch(self, channel: str, watch: Watch) -> None:
        """The last watcher of a channel unsubscribes it."""
        watchers = self._watchers.get(channel)
        if watchers is None:
            return
        watchers.discard(watch)
        if watchers:
            return
        del self._watchers[channel]
        self._confirmed.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            self._sent(channel)
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe(channel)
