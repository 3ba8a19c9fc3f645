"""API keys: parsing the configured ones and checking a presented one in constant time.

Keys are configured in ``API_KEYS`` (comma-separated; blank entries ignored), each either the key
itself or its SHA-256 as ``sha256:<64 hex digits>`` so the plain key never sits in the
environment. Make a hash with::

    agent-api hash-key 'the-key'        # or: printf %s 'the-key' | sha256sum

Every caller is identified by the digest of its key (never the key): sessions belong to it and
rate limits count per it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
ANONYMOUS = "anonymous"


def hash_key(key: str) -> str:
    """The ``sha256:`` form of a key, for ``API_KEYS``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``key_id`` is a digest of the key (``anonymous`` when auth is off);
    ``admin`` for a key of ``ADMIN_API_KEYS``."""

    key_id: str
    admin: bool = False


class KeyRing:
    """The configured keys, kept only as SHA-256 digests."""

    def __init__(self, entries: list[str], admin_entries: Sequence[str] = ()) -> None:
        self._admins = [_digest(entry) for entry in admin_entries]
        # An admin key is an API key too.
        self._digests = [_digest(entry) for entry in entries] + self._admins

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def verify(self, presented: str | None) -> Principal | None:
        """The caller for ``presented``, or None. Every configured digest is compared, in constant time."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = admin = False
        for candidate in self._digests:
            found |= hmac.compare_digest(digest, candidate)
        for candidate in self._admins:
            admin |= hmac.compare_digest(digest, candidate)
        return Principal(key_id(digest), admin=admin) if found else None


def key_id(digest: bytes) -> str:
    """The non-secret id of a key (what logs, usage and budgets name it by): half its SHA-256."""
    return digest.hex()[:32]


def key_id_of(entry: str) -> str:
    """The id of a key given as in API_KEYS (plain, or ``sha256:<hex>``)."""
    return key_id(_digest(entry))


def _digest(entry: str) -> bytes:
    match = HASHED.match(entry)
    return bytes.fromhex(match.group(1)) if match else hashlib.sha256(entry.encode()).digest()
