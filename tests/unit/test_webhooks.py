"""Webhook URL checks and signed delivery, against a receiver on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agent_api.runs.webhooks import WebhookRefused, WebhookSender, new_secret, validate_webhook_url

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://10.1.2.3/x",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/x",
    "http://[fe80::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",
    "ftp://93.184.216.34/x",
    "https://user:pass@93.184.216.34/x",
    "https:///nohost",
    "http://93.184.216.34:99999/x",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        await validate_webhook_url(url, allow_private=False)


async def test_public_addresses_pass_and_private_ones_when_allowed() -> None:
    await validate_webhook_url("https://93.184.216.34/hook", allow_private=False)
    await validate_webhook_url("http://127.0.0.1:9/hook", allow_private=True)
    with pytest.raises(WebhookRefused):  # the shape is checked even then
        await validate_webhook_url("ftp://127.0.0.1/x", allow_private=True)


class Receiver:
    """Answers each POST with the next status of ``statuses`` (then 204) and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 204)


@pytest.fixture
async def secret() -> AsyncIterator[str]:
    yield new_secret()


def sender(secret: str, receiver: Receiver, attempts: int = 3) -> WebhookSender:
    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle))
    return WebhookSender(secret, max_attempts=attempts, backoff=0.001, allow_private=True, client=client)


async def test_delivery_is_signed_per_standard_webhooks(secret: str) -> None:
    receiver = Receiver([])
    hooks = sender(secret, receiver)
    assert await hooks.deliver("http://127.0.0.1:9/h", {"run_id": "r1"}, event_type="run.succeeded", message_id="r1")
    request = receiver.received[0]
    event = Webhook(secret).verify(request.content, dict(request.headers))
    assert event["type"] == "run.succeeded" and event["data"] == {"run_id": "r1"}
    assert request.headers["webhook-id"] == "r1" and request.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):  # another secret does not verify
        Webhook(new_secret()).verify(request.content, dict(request.headers))


async def test_retries_on_5xx_and_429_with_the_same_id(secret: str) -> None:
    receiver = Receiver([500, 429])
    assert await sender(secret, receiver).deliver("http://h/x", {}, event_type="t", message_id="m7")
    assert [r.headers["webhook-id"] for r in receiver.received] == ["m7"] * 3
    for request in receiver.received:
        Webhook(secret).verify(request.content, dict(request.headers))


async def test_a_4xx_gives_up_at_once_and_attempts_are_bounded(secret: str) -> None:
    refused = Receiver([400])
    assert not await sender(secret, refused).deliver("http://h/x", {}, event_type="t", message_id="m")
    assert len(refused.received) == 1
    failing = Receiver([503] * 10)
    assert not await sender(secret, failing, attempts=4).deliver("http://h/x", {}, event_type="t", message_id="m")
    assert len(failing.received) == 4


async def test_network_errors_are_retried_then_reported(secret: str) -> None:
    calls = 0

    def broken(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(broken))
    hooks = WebhookSender(secret, max_attempts=3, backoff=0.001, allow_private=True, client=client)
    assert not await hooks.deliver("http://h/x", {}, event_type="t", message_id="m")
    assert calls == 3


async def test_scheduled_deliveries_finish_before_close(secret: str) -> None:
    receiver = Receiver([])
    hooks = sender(secret, receiver)
    for i in range(3):
        hooks.schedule("http://h/x", {"i": i}, event_type="t", message_id=f"m{i}")
    await hooks.aclose(timeout=5)
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == ["m0", "m1", "m2"]
