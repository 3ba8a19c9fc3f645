"""The one TLS context of the process's outgoing HTTPS: the model, webhooks, readiness probes."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """The certificate checks of every outgoing HTTPS connection, built once per process.

    It is the context httpx builds for ``verify=True`` (the CA bundle named by ``SSL_CERT_FILE``
    or ``SSL_CERT_DIR`` when set, certifi's otherwise). httpx builds it again for every client,
    loading the whole CA bundle each time: about 25 ms of CPU for each client a process makes (the
    model's, the webhooks', the readiness probe's, one per run thread), the largest part of
    starting the app. Clients only set ALPN on it, and every client here speaks HTTP/1.1 alone,
    so sharing it changes nothing else.
    """
    return httpx.create_ssl_context()
