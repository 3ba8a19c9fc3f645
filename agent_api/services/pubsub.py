"""Listening on a Redis pub/sub channel for the life of a process, through idle hours and restarts.

redis-py's ``PubSub.listen`` reads under the client's socket timeout: on a channel that stays
quiet longer than that (the service's clients time out after REDIS_TIMEOUT, 5 s), every read
times out and redis-py silently reconnects and subscribes again, and whatever was published
in between is lost. :func:`listen` waits for messages without that timeout instead, checks an
idle connection with a PING (a connection whose peer vanished would otherwise wait forever), and
tells its caller each time it is subscribed (again), so that the caller can look up what it may
have missed while it was not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NoReturn

import redis.asyncio as redis

log = logging.getLogger(__name__)

# A connection silent this long gets a PING; silent for as long again after it, it is given up.
IDLE_SECONDS = 30.0
# After losing the connection, the wait before subscribing again.
RETRY_SECONDS = 1.0


class Unanswered(Exception):
    """The server did not answer a PING on the subscribed connection."""


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data


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
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
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
                    kind = _text(message["type"])
                    if kind == "message":
                        on_message(_text(message["data"]))
                    elif kind == "subscribe" and on_subscribed is not None:
                        on_subscribed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis went away or stopped answering: subscribe again once it is back
            log.warning("%s lost its connection to Redis (%s); subscribing again", name, type(exc).__name__)
            await asyncio.sleep(retry)
