"""Model streams: what a streamed model call costs the worker, by the transport under its HTTP client
and whether its connection is reused (agent_api/agents/model_http.py, model_streams.py), side by
side in one run.

The OpenAI SDK stops reading a stream at ``data: [DONE]`` and closes the response before the HTTP
message has ended, which made httpcore close the connection: every streamed model call opened a
new one (a TCP handshake, and over HTTPS a TLS handshake). The service's model client finishes
the message after ``[DONE]`` so that the connection is reused; and it sends through its own
transport (agents/model_http.py: HTTP/1.1 parsed by httptools) rather than httpx's own (httpcore
and h11), which reads a streamed answer for less CPU.

The offline model in its own process on a loopback port, over HTTP and over HTTPS (a certificate
of a throw-away CA made with trustme, which the client trusts through SSL_CERT_FILE). In this
process, the real OpenAI client (with the service's changes to it, as its processes run it) on
the service's model HTTP client (``SharedHTTPClient``): over httpx's transport with the response
closed at ``[DONE]`` (before), over httpx's transport with the message finished, and as now (over
its own transport): ``--calls`` (default 300) streamed chat completions one after another, this process's
CPU (user + system) per call, the model's excluded, and the wall time per call; then the CPU per
streamed token: ``--token-calls`` (default 40) answers of 400 tokens minus as many of 10, divided
by the tokens between. Each is measured ``--repeat`` times (default 5), alternating; medians with
their range. On loopback a round trip costs next to nothing: over a network, each handshake
avoided also saves its round trips (one for TCP, one or two more for TLS) before the request.

    .venv/bin/python bench/model_stream.py
    .venv/bin/python bench/model_stream.py --quick   # a smoke run, nothing published
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import trustme  # type: ignore[import-not-found,unused-ignore]  # the `bench` extra
from harness.cli import add_output_flags, output, parse_args, start
from harness.processes import LOOPBACK, free_port, spawn, wait_until
from harness.results import run_metadata
from harness.tables import fmt, markdown_table, text_table

from agent_api.agents.llm import (
    SharedHTTPClient,
    chunks_from_json,
    fast_stream_event_json,
    skip_chat_request_transforms,
    validate_chat_responses,
)

QUICK = {"calls": 30, "token_calls": 5, "repeat": 1}
SCHEMES = ("http", "https")
FEW_TOKENS, MANY_TOKENS = 10, 400  # the answers' lengths for the CPU per token


class HttpxTransport(SharedHTTPClient):
    """The service's model client over httpx's own transport (as with a proxy in the environment)."""

    def __init__(self, *, timeout: float) -> None:
        super().__init__(timeout=timeout, direct=False)


class ClosedAtDone(HttpxTransport):
    """The service's model client as it was: httpx's transport, a streamed response closed at ``[DONE]``."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return self._thread_client().send(request, **kwargs)


CLIENTS: dict[str, type[SharedHTTPClient]] = {
    "before: httpx's transport, closed at [DONE]": ClosedAtDone,
    "httpx's transport, finished after [DONE]": HttpxTransport,
    "now: its own transport": SharedHTTPClient,
}
# The clients' names in earlier runs, for the previous run's column.
EARLIER_NAMES = {
    "before: httpx's transport, closed at [DONE]": "before: closed at [DONE]",
    "httpx's transport, finished after [DONE]": "now: finished after [DONE]",
    "now: its own transport": "now: urllib3's transport",
}


@contextmanager
def offline_model(tls: tuple[Path, Path] | None) -> Iterator[str]:
    """The offline model over HTTP, or HTTPS with ``tls`` (its certificate and key, the CA's); yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "agent_api.offline_llm", "--host", LOOPBACK, "--port", str(port)]
    scheme = "http"
    verify: bool | str = True
    if tls is not None:
        args += ["--ssl-certfile", str(tls[0])]
        scheme, verify = "https", str(tls[1])
    base_url = f"{scheme}://{LOOPBACK}:{port}/v1"
    with spawn(args, name=f"offline-model-{scheme}") as (process, workdir):

        def ready() -> bool:
            try:
                return httpx.get(f"{base_url}/models", timeout=2, verify=verify).is_success
            except httpx.HTTPError:
                return False

        wait_until(ready, process, f"the offline model ({scheme})", workdir / "stderr.log", 30)
        yield base_url


def per_call(client_class: type[SharedHTTPClient], base_url: str, calls: int, token_calls: int) -> dict[str, float]:
    """This process's CPU and the wall time per streamed call, in ms, over ``calls`` calls; its CPU per token in µs."""
    http = client_class(timeout=30)
    client = openai.OpenAI(api_key="bench", base_url=base_url, http_client=http, max_retries=0)

    def call(i: int, directive: str = "") -> None:
        stream = client.chat.completions.create(
            model="offline-model", messages=[{"role": "user", "content": f"question {i}{directive}"}], stream=True
        )
        for _ in stream:
            pass

    def cpu_of(tokens: int) -> float:
        cpu = time.process_time()
        for i in range(token_calls):
            call(i, f" [[tokens:{tokens}]]")
        return time.process_time() - cpu

    try:
        for i in range(5):  # warm: the pool, the SDK's resources
            call(i)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(calls):
            call(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        few, many = cpu_of(FEW_TOKENS), cpu_of(MANY_TOKENS)
        return {
            "cpu": 1e3 * cpu / calls,
            "wall": 1e3 * wall / calls,
            "token_us": 1e6 * (many - few) / (token_calls * (MANY_TOKENS - FEW_TOKENS)),
        }
    finally:
        http.close()


def measure(calls: int, token_calls: int, repeat: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    # The OpenAI client as the service's processes run it (engine.open_engine).
    validate_chat_responses()
    fast_stream_event_json()
    chunks_from_json()
    skip_chat_request_transforms()
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        scheme: {name: {"cpu": [], "wall": [], "token_us": []} for name in CLIENTS} for scheme in SCHEMES
    }
    with tempfile.TemporaryDirectory(prefix="agent-api-bench-tls-") as tmp:
        ca = trustme.CA()
        certfile, cafile = Path(tmp) / "server.pem", Path(tmp) / "ca.pem"
        ca.issue_cert(LOOPBACK).private_key_and_cert_chain_pem.write_to_path(str(certfile))
        ca.cert_pem.write_to_path(str(cafile))
        os.environ["SSL_CERT_FILE"] = str(cafile)  # read by the service's TLS context, built on first use
        with offline_model(None) as http_url, offline_model((certfile, cafile)) as https_url:
            urls = {"http": http_url, "https": https_url}
            for _ in range(repeat):
                for scheme in SCHEMES:
                    for name, client_class in CLIENTS.items():
                        figures = per_call(client_class, urls[scheme], calls, token_calls)
                        for key, value in figures.items():
                            samples[scheme][name][key].append(value)
    return samples


def _cell(values: list[float]) -> str:
    return f"{fmt(statistics.median(values), 2)} ({fmt(min(values), 2)}–{fmt(max(values), 2)})"


def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    meta = data["meta"]
    machine = meta["machine"]
    samples = data["samples"]
    before = previous.get("samples") or {}
    header = ["model over", "client", "CPU per call (ms)", "previous run", "wall per call (ms)", "previous run"]
    header += ["CPU per token (µs)", "previous run"]
    rows = []

    def previous_median(old: dict[str, list[float]] | None, key: str) -> str:
        return fmt(statistics.median(old[key]), 2) if old and old.get(key) else "-"

    for scheme, by_client in samples.items():
        for name, figures in by_client.items():
            earlier = before.get(scheme, {})
            old = earlier.get(name) or earlier.get(EARLIER_NAMES.get(name, ""))
            rows.append(
                [
                    scheme.upper(),
                    name,
                    _cell(figures["cpu"]),
                    previous_median(old, "cpu"),
                    _cell(figures["wall"]),
                    previous_median(old, "wall"),
                    _cell(figures["token_us"]),
                    previous_median(old, "token_us"),
                ]
            )
    return "\n".join(
        [
            "## Model streams: the transport, and a connection per call or one reused",
            "",
            "The OpenAI SDK closes a streamed answer at `data: [DONE]`, before its HTTP message has ended, and "
            "httpcore then closes the connection; the service's model client finishes the message so that the "
            "connection is reused (`agent_api/agents/model_streams.py`), and sends through its own transport "
            "(HTTP/1.1 parsed by httptools, `agent_api/agents/model_http.py`) rather than httpx's own (kept when a "
            "proxy is set in the environment). The real OpenAI client (as the service "
            "runs it) on the service's model HTTP client, over httpx's transport closed at `[DONE]` (before), "
            "over httpx's transport with the message finished, and over its own transport (now), against the "
            "offline model in its own process on loopback, over HTTP and over HTTPS (a throw-away CA's certificate): "
            f"{data['sizes']['calls']} streamed chat completions one after another, this process's CPU (user + "
            "system) and the wall time per call, the model's CPU excluded; the CPU per streamed token: "
            f"{data['sizes'].get('token_calls', '-')} answers of {MANY_TOKENS} tokens minus as many of "
            f"{FEW_TOKENS}, divided by the tokens between; medians of "
            f"{data['sizes']['repeat']} runs (range), alternating. On loopback a round trip costs next to nothing; "
            "over a network each handshake avoided also saves its round trips before the request. "
            f"Machine: {machine['cpus']} cores, Python {machine['python']}; {meta['date']}; "
            f"1-minute load average at the start {fmt(machine['load_average_at_start'], 2)}. "
            "Reproduce: `.venv/bin/python bench/model_stream.py` (raw numbers: `bench/results/model_stream.json`).",
            "",
            markdown_table(header, rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="streamed calls per measurement (default: 300)")
    parser.add_argument(
        "--token-calls", type=int, default=40, help="answers of each length for the CPU per token (default: 40)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="measurements per client and scheme (default: 5)")
    add_output_flags(parser)
    args = parse_args(parser, argv, QUICK)
    if args.calls < 1 or args.token_calls < 1 or args.repeat < 1:
        parser.error("--calls, --token-calls and --repeat must be positive")
    out = output(args)
    previous = {k: v for k, v in (out.load("model_stream") or {}).items() if k != "previous"}
    begun = start("model_stream.py", argv)
    samples = measure(args.calls, args.token_calls, args.repeat)
    data: dict[str, Any] = {
        "meta": run_metadata("model_stream", begun.command, begun.revision, begun.load),
        "sizes": {"calls": args.calls, "token_calls": args.token_calls, "repeat": args.repeat},
        "samples": samples,
        "previous": previous,
    }
    out.save("model_stream", data)
    rows = [
        [scheme, name, *(fmt(statistics.median(f[key]), 2) for key in ("cpu", "wall", "token_us"))]
        for scheme, by_client in samples.items()
        for name, f in by_client.items()
    ]
    print(text_table(["over", "client", "CPU per call (ms)", "wall per call (ms)", "CPU per token (µs)"], rows))
    out.report("model-stream", report(data, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
