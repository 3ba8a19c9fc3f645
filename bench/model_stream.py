"""Model streams: what a streamed model call costs the worker when its connection is reused, and when
it is not (agent_api/agents/model_streams.py), side by side in one run.

The OpenAI SDK stops reading a stream at ``data: [DONE]`` and closes the response before the HTTP
message has ended, which made httpcore close the connection: every streamed model call opened a
new one (a TCP handshake, and over HTTPS a TLS handshake). The service's model client finishes
the message after ``[DONE]`` so that the connection is reused.

The offline model in its own process on a loopback port, over HTTP and over HTTPS (a certificate
of a throw-away CA made with trustme, which the client trusts through SSL_CERT_FILE). In this
process, the real OpenAI client (with the service's changes to it, as its processes run it) on
the service's model HTTP client (``SharedHTTPClient``), as
before (the response closed at ``[DONE]``) and as now: ``--calls`` (default 300) streamed chat
completions one after another, this process's CPU (user + system) per call, the model's excluded,
and the wall time per call. Each is measured ``--repeat`` times (default 5), alternating; medians
with their range. On loopback a round trip costs next to nothing: over a network, each handshake
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

from agent_api.agents.llm import SharedHTTPClient, skip_chat_request_transforms, validate_chat_responses

QUICK = {"calls": 30, "repeat": 1}
SCHEMES = ("http", "https")


class ClosedAtDone(SharedHTTPClient):
    """The service's model client as it was: a streamed response closed at ``[DONE]`` as it stands."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return self._thread_client().send(request, **kwargs)


CLIENTS: dict[str, type[SharedHTTPClient]] = {
    "before: closed at [DONE]": ClosedAtDone,
    "now: finished after [DONE]": SharedHTTPClient,
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


def per_call(client_class: type[SharedHTTPClient], base_url: str, calls: int) -> tuple[float, float]:
    """This process's CPU and the wall time per streamed call, in ms, over ``calls`` calls."""
    http = client_class(timeout=30)
    client = openai.OpenAI(api_key="bench", base_url=base_url, http_client=http, max_retries=0)

    def call(i: int) -> None:
        stream = client.chat.completions.create(
            model="offline-model", messages=[{"role": "user", "content": f"question {i}"}], stream=True
        )
        for _ in stream:
            pass

    try:
        for i in range(5):  # warm: the pool, the SDK's resources
            call(i)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(calls):
            call(i)
        return 1e3 * (time.process_time() - cpu) / calls, 1e3 * (time.perf_counter() - wall) / calls
    finally:
        http.close()


def measure(calls: int, repeat: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    # The OpenAI client as the service's processes run it (engine.open_engine).
    validate_chat_responses()
    skip_chat_request_transforms()
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        scheme: {name: {"cpu": [], "wall": []} for name in CLIENTS} for scheme in SCHEMES
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
                        cpu, wall = per_call(client_class, urls[scheme], calls)
                        samples[scheme][name]["cpu"].append(cpu)
                        samples[scheme][name]["wall"].append(wall)
    return samples


def _cell(values: list[float]) -> str:
    return f"{fmt(statistics.median(values), 2)} ({fmt(min(values), 2)}–{fmt(max(values), 2)})"


def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    meta = data["meta"]
    machine = meta["machine"]
    samples = data["samples"]
    before = previous.get("samples") or {}
    header = ["model over", "client", "CPU per call (ms)", "previous run", "wall per call (ms)", "previous run"]
    rows = []
    for scheme, by_client in samples.items():
        for name, figures in by_client.items():
            old = before.get(scheme, {}).get(name)
            rows.append(
                [
                    scheme.upper(),
                    name,
                    _cell(figures["cpu"]),
                    fmt(statistics.median(old["cpu"]), 2) if old else "-",
                    _cell(figures["wall"]),
                    fmt(statistics.median(old["wall"]), 2) if old else "-",
                ]
            )
    return "\n".join(
        [
            "## Model streams: a connection per call, or one reused",
            "",
            "The OpenAI SDK closes a streamed answer at `data: [DONE]`, before its HTTP message has ended, and "
            "httpcore then closes the connection; the service's model client finishes the message so that the "
            "connection is reused (`agent_api/agents/model_streams.py`). The real OpenAI client (as the service "
            "runs it) on the service's model HTTP client, as before and as now, against the offline model in its "
            f"own process on loopback, over HTTP and over HTTPS (a throw-away CA's certificate): "
            f"{data['sizes']['calls']} streamed chat completions one after another, this process's CPU (user + "
            "system) and the wall time per call, the model's CPU excluded; medians of "
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
    parser.add_argument("--repeat", type=int, default=5, help="measurements per client and scheme (default: 5)")
    add_output_flags(parser)
    args = parse_args(parser, argv, QUICK)
    if args.calls < 1 or args.repeat < 1:
        parser.error("--calls and --repeat must be positive")
    out = output(args)
    previous = {k: v for k, v in (out.load("model_stream") or {}).items() if k != "previous"}
    begun = start("model_stream.py", argv)
    samples = measure(args.calls, args.repeat)
    data: dict[str, Any] = {
        "meta": run_metadata("model_stream", begun.command, begun.revision, begun.load),
        "sizes": {"calls": args.calls, "repeat": args.repeat},
        "samples": samples,
        "previous": previous,
    }
    out.save("model_stream", data)
    rows = [
        [scheme, name, fmt(statistics.median(f["cpu"]), 2), fmt(statistics.median(f["wall"]), 2)]
        for scheme, by_client in samples.items()
        for name, f in by_client.items()
    ]
    print(text_table(["over", "client", "CPU per call (ms)", "wall per call (ms)"], rows))
    out.report("model-stream", report(data, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
