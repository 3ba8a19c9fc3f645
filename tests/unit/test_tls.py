"""The process's one TLS context for outgoing HTTPS: built once, checking what httpx's default checks."""

from __future__ import annotations

import ssl

import httpx

from agent_api.agents.llm import SharedHTTPClient
from agent_api.tls import client_tls_context


def test_one_context_per_process() -> None:
    assert client_tls_context() is client_tls_context()


def test_it_checks_certificates_as_httpx_does_by_default() -> None:
    ours, httpx_default = client_tls_context(), httpx.create_ssl_context()
    assert ours.verify_mode == httpx_default.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname and httpx_default.check_hostname
    assert ours.cert_store_stats() == httpx_default.cert_store_stats()
    assert ours.cert_store_stats()["x509_ca"] > 0


def test_the_model_client_and_its_thread_pools_use_it() -> None:
    client = SharedHTTPClient(timeout=5)
    try:
        assert client._transport._pool._ssl_context is client_tls_context()  # type: ignore[attr-defined]
        transport = client._thread_client()._transport
        assert transport._ssl_context is client_tls_context()  # type: ignore[attr-defined]
    finally:
        client.close()
