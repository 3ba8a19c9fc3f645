"""The connection pool of the service's Redis clients: redis-py's blocking pool without its
per-command costs when a connection is free.

For every command, redis-py's ``BlockingConnectionPool`` takes an ``asyncio.Condition`` and
starts a timeout to wait for a free connection, even when one is free, and then polls the
connection's socket (a read under a zero timeout, which ends through a cancellation) to make sure
no data is waiting on it; giving it back takes the condition again. Per round trip on loopback
that was about 40% of the client's CPU (docs/performance.md, *Redis round trips*).

:class:`LeanBlockingPool` keeps what the pool promises, and tests/integration/test_redis_pool.py
checks each point against a real redis-server with the installed redis-py:

- when every connection is in use, a command waits for one (first come, first served) up to the
  pool's ``timeout``, then fails with ``ConnectionError``: that path is redis-py's own;
- a connection that the server closed, or that holds data nobody read, is replaced before use.
  Instead of polling the socket, it looks at what the event loop has already read from it (the
  stream's buffer and end), which is what the poll learns when it finds data.

When a connection is free and no command waits, it is taken and given back without the
condition. Left out on that path: redis-py's pool metrics (OpenTelemetry, not configured here) and
the after-release event that re-authenticates connections of streaming credential providers
(not used: the password, if any, comes with ``REDIS_URL``).

Its connections also pack commands with hiredis, as redis-py's synchronous client does when
hiredis is installed (:class:`HiredisPacking`).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, Connection


class HiredisPacking:
    """A connection that packs its commands with hiredis (C) instead of in Python.

    redis-py's synchronous client packs with hiredis when it is installed; its asyncio client
    always packs in Python: about 51 µs for a 28-argument ``EVALSHA`` (a run's creation) against
    6.5 µs, on the benchmark machine. The bytes are the same (tests/unit/test_redis_packing.py
    compares them with the installed redis-py's). What hiredis does not take (what redis-py
    refuses with a ``DataError``: None, a boolean, a bytearray, a list) and a client with another
    encoding than UTF-8 (strict) go the Python way, with its result or its error.
    """

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder
        if encoder.encoding == "utf-8" and encoder.encoding_errors == "strict":
            # A command name with spaces ("CONFIG GET") is sent as separate words, as redis-py does.
            words = args
            if isinstance(args[0], str):
                words = (*args[0].encode().split(), *args[1:])
            elif b" " in args[0]:
                words = (*args[0].split(), *args[1:])
            try:
                return [hiredis.pack_command(words)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` with :class:`HiredisPacking` (one class per connection class)."""
    if issubclass(connection_class, HiredisPacking):
        return connection_class
    packing = _PACKING.get(connection_class)
    if packing is None:
        packing = _PACKING[connection_class] = type(connection_class.__name__, (HiredisPacking, connection_class), {})
    return packing


class LeanBlockingPool(BlockingConnectionPool):
    """``BlockingConnectionPool`` with a fast path for a free connection when nobody waits."""

    def __init__(self, *, connection_class: type[AbstractConnection] = Connection, **kwargs: Any) -> None:
        super().__init__(connection_class=hiredis_packing(connection_class), **kwargs)

    def _nobody_waits(self) -> bool:
        return not self._condition._waiters

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._available_connections or not self._nobody_waits():
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        """Connect ``connection``, anew if the server closed it or data nobody read waits on it."""
        if connection.is_connected:
            reader = connection._reader  # the stream redis-py reads replies from
            if reader is not None and not reader.at_eof() and connection._socket_is_empty():  # type: ignore[no-untyped-call]
                return
            await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]

    async def release(self, connection: AbstractConnection) -> None:
        if not self._nobody_waits():
            await super().release(connection)  # hands it to the longest waiting command
            return
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)
