"""Webhooks: the final run, POSTed to the URL its creator gave, signed per Standard Webhooks.

Receivers verify a delivery with the ``standardwebhooks`` package and ``WEBHOOK_SECRET``: the
``webhook-id`` header (the run id, the same on every retry, so receivers can deduplicate),
``webhook-timestamp`` and ``webhook-signature`` sign the body. Deliveries are retried with
exponential backoff on network errors, time-outs, 429 and 5xx, a bounded number of times.

A webhook URL is a request the server makes on a user's behalf, so it must not reach inside
the network the server runs in (server-side request forgery): URLs whose host is or resolves to
a loopback, private, link-local or otherwise special address are refused, when the run is
created and again before each attempt (the DNS answer may have changed), unless
``WEBHOOK_ALLOW_PRIVATE`` says the operator wants that. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import random
import secrets
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from agent_api.tls import client_tls_context

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048


class WebhookRefused(ValueError):
    """The webhook URL is not one the service will call; the message says why, for the caller."""


def new_secret() -> str:
    """A fresh signing secret in the ``whsec_`` form receivers expect."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def validate_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is malformed, or that points inside the network (unless ``allow_private``)."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused("The webhook URL is not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("The webhook URL must be an http:// or https:// URL with a host.")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("The webhook URL must not carry credentials.")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise WebhookRefused("The webhook URL's host does not resolve.") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(_is_public(a) for a in addresses):
        raise WebhookRefused(
            "The webhook URL points to a loopback, private, link-local or reserved address; "
            "such URLs are refused unless WEBHOOK_ALLOW_PRIVATE is set."
        )


class WebhookSender:
    """Signs and delivers webhooks in the background, with bounded retries."""

    def __init__(
        self,
        secret: str | None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if secret is None:
            secret = new_secret()
            log.warning("WEBHOOK_SECRET is not set: webhooks are signed with a random secret nobody can verify")
        self._webhook = Webhook(secret)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.allow_private = allow_private
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=client_tls_context())
        self._tasks: set[asyncio.Task[bool]] = set()

    def schedule(self, url: str, payload: dict[str, Any], *, event_type: str, message_id: str) -> None:
        """Deliver in the background; the caller does not wait for the receiver."""
        task = asyncio.get_running_loop().create_task(
            self.deliver(url, payload, event_type=event_type, message_id=message_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, url: str, payload: dict[str, Any], *, event_type: str, message_id: str) -> bool:
        """POST the payload until the receiver takes it (2xx), refuses it (4xx) or the attempts run out."""
        now = datetime.now(UTC)
        body = json.dumps({"type": event_type, "timestamp": now.isoformat(), "data": payload})
        for attempt in range(1, self.max_attempts + 1):
            outcome = await self._attempt(url, body, message_id)
            if outcome is not None:
                return outcome
            if attempt < self.max_attempts:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        log.warning("webhook %s not delivered after %d attempts", message_id, self.max_attempts)
        return False

    async def _attempt(self, url: str, body: str, message_id: str) -> bool | None:
        """True: delivered. False: refused for good. None: worth another attempt."""
        try:
            if not self.allow_private:
                await validate_webhook_url(url, allow_private=False)
            sent_at = datetime.now(UTC)
            headers = {
                "webhook-id": message_id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": self._webhook.sign(message_id, sent_at, body),
                "content-type": "application/json",
                "user-agent": "agent-api-webhooks",
            }
            response = await self._client.post(url, content=body.encode(), headers=headers)
        except WebhookRefused:
            log.warning("webhook %s refused: its URL now points inside the network", message_id)
            return False
        except httpx.HTTPError as exc:
            log.info("webhook %s attempt failed: %s", message_id, type(exc).__name__)
            return None
        if response.is_success:
            return True
        if response.status_code == 429 or response.status_code >= 500:
            log.info("webhook %s attempt answered %d", message_id, response.status_code)
            return None
        log.warning("webhook %s refused by the receiver: %d", message_id, response.status_code)
        return False

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give pending deliveries ``timeout`` seconds, cancel the rest, close the HTTP client."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
        if self._owns_client:
            await self._client.aclose()
