"""Prometheus metrics: HTTP traffic, and the agent signals that matter for cost and quality.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by
them (``agent-api serve --workers N`` does this itself): each worker writes its samples there and
``GET /metrics`` on any worker reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)

from agent_api.models.chat import Usage

HTTP_REQUESTS = Counter("agent_api_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "agent_api_http_request_duration_seconds",
    "Time to answer an HTTP request (to the last byte, streams included).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
MODEL_TOKENS = Counter(
    "agent_api_model_tokens_total", "Model tokens reported by the model, per run.", ["team", "model", "kind"]
)
RUN_TURNS = Histogram(
    "agent_api_run_agent_turns", "Agent replies in one run.", ["team"], buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
)
RUN_DURATION = Histogram(
    "agent_api_run_duration_seconds",
    "Length of one run of a team, by outcome.",
    ["team", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RUNS_IN_FLIGHT = Gauge("agent_api_runs_in_flight", "Runs in progress.", ["team"], multiprocess_mode="livesum")
SESSION_TURNS = Histogram(
    "agent_api_session_turns",
    "A session's turn count, observed at each completed turn.",
    ["team"],
    buckets=(1, 2, 3, 5, 10, 20, 50, 100),
)
SESSION_AGE = Histogram(
    "agent_api_session_age_seconds",
    "Time since a session started, observed at each completed turn.",
    ["team"],
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
ERRORS = Counter(
    "agent_api_errors_total",
    "Errors by type: validation, auth, rate_limit, conflict, not_found, model_not_found, method_not_allowed, "
    "too_large, unsupported_media_type, run_timeout, input_timeout, not_waiting, wrong_request, upstream_timeout, "
    "upstream_error, upstream_rate_limit, budget_exceeded, forbidden, "
    "store, cancel, shutdown, agent, worker_lost, internal.",
    ["type"],
)
RUNS_FINISHED = Counter("agent_api_runs_total", "Runs that ended, by final status.", ["team", "status"])
RUN_QUEUED = Histogram(
    "agent_api_run_queued_seconds",
    "Time a run waited between its creation and a worker starting it.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_DEPTH = Gauge("agent_api_run_queue_depth", "Runs waiting in the job queue for a worker.", multiprocess_mode="max")
LIVE_WORKERS = Gauge("agent_api_run_workers", "Run workers that reported in the last minute.", multiprocess_mode="max")
RUNS_WAITING = Gauge(
    "agent_api_runs_waiting_for_input", "Runs waiting for a person's input.", ["team"], multiprocess_mode="livesum"
)
INPUT_WAIT = Histogram(
    "agent_api_input_wait_seconds",
    "How long runs waited for a person's input, by outcome (answered, timeout, cancelled).",
    ["team", "outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
CACHE = Counter("agent_api_llm_cache_requests_total", "Model requests looked up in the response cache.", ["result"])
STREAM_FOLLOWERS = Gauge(
    "agent_api_stream_followers",
    "Open followers of runs' event streams, by how their events come: pubsub (the API process's one pub/sub "
    "connection) or log (reading the log itself: embedded, or with Redis a blocking read each, while pub/sub is "
    "down or for a writer that does not publish).",
    ["via"],
    multiprocess_mode="livesum",
)


def record_usage(team: str, model: str, usage: Usage) -> None:
    MODEL_TOKENS.labels(team, model, "prompt").inc(usage.prompt_tokens)
    MODEL_TOKENS.labels(team, model, "completion").inc(usage.completion_tokens)


def registry() -> CollectorRegistry:
    """The registry to report: this process's, or the sum over every process of a multiprocess setup."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return DEFAULT_REGISTRY
