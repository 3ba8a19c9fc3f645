"""OpenTelemetry traces of every run: off and free unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

When on, a process has one tracer provider, exporting with OTLP over HTTP, and:

- the FastAPI instrumentation makes a span of every request (``main.create_app``);
- the request's trace context travels with the run it creates (in the run record), so the
  worker's ``run {team}`` span is its child even in another process (``runs.executor``);
- AG2's own instrumentation (its GenAI semantic conventions) makes a span of each agent's turn
  (``invoke_agent``), each model call (``chat {model}``, with token counts; the service adds the
  time to the first token) and each tool call (``execute_tool {name}``) inside the run's span.

Prompts, answers, tool arguments and results, and a person's input are not exported unless
``TRACE_CONTENT=true``: AG2 records some of them unconditionally, so a span processor removes
them before any exporter sees a span. The standard ``OTEL_*`` variables of the OTLP exporter
(headers, certificates, ...) are read by the exporter itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from agent_api import __version__
from agent_api.config import Settings

log = logging.getLogger(__name__)

TRACER_NAME = "agent_api"

# Span attributes that carry what people wrote or tools returned (GenAI conventions and AG2's).
CONTENT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "ag2.human_input.prompt",
        "ag2.human_input.response",
        "ag2.chats.summaries",
    }
)

_provider: TracerProvider | None = None


class ContentFilter(SpanProcessor):
    """Passes ended spans to ``inner`` without the content attributes (unless content is kept)."""

    def __init__(self, inner: SpanProcessor, *, keep_content: bool) -> None:
        self.inner = inner
        self.keep_content = keep_content

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        if not self.keep_content and any(name in CONTENT_ATTRIBUTES for name in attributes):
            span = ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes={k: v for k, v in attributes.items() if k not in CONTENT_ATTRIBUTES},
                events=span.events,
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def provider() -> TracerProvider | None:
    """The process's tracer provider; None when tracing is off."""
    return _provider


def _start(service_name: str, keep_content: bool) -> TracerProvider:
    global _provider
    if _provider is None:
        _provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": __version__})
        )
        trace.set_tracer_provider(_provider)
        from autogen.opentelemetry import instrument_llm_wrapper

        # Model-call spans for every agent of every run (a process-wide patch of AG2's own).
        instrument_llm_wrapper(tracer_provider=_provider, capture_messages=keep_content)
    return _provider


def setup_tracing(settings: Settings) -> TracerProvider | None:
    """Start exporting spans to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP over HTTP), once per process."""
    endpoint, keep_content = settings.otel_exporter_otlp_endpoint, settings.trace_content
    if not endpoint:
        return _provider
    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider = _start(settings.otel_service_name, keep_content)
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        tracer_provider.add_span_processor(ContentFilter(BatchSpanProcessor(exporter), keep_content=keep_content))
        log.info("tracing on: spans go to %s", endpoint)
    return _provider


def export_to(exporter: SpanExporter, *, keep_content: bool = False, service_name: str = "agent-api") -> None:
    """Send every span of this process to ``exporter`` as it ends (an in-memory exporter in tests)."""
    _start(service_name, keep_content).add_span_processor(
        ContentFilter(SimpleSpanProcessor(exporter), keep_content=keep_content)
    )


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, __version__)


def current_context_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty when tracing is off), to store with a run."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> Context | None:
    """The trace context a run was created in (None when it carries none)."""
    return propagate.extract(dict(carrier)) if carrier else None


def instrument_agents(agents: list[Any]) -> None:
    """Spans of each agent's turns, tool calls and human input (AG2's instrumentation); no-op when off."""
    if _provider is None:
        return
    from autogen.opentelemetry import instrument_agent

    for agent in agents:
        instrument_agent(agent, tracer_provider=_provider)


_first_token_of: ContextVar[int] = ContextVar("first_token_of", default=0)


def note_first_token() -> None:
    """On a streamed token: the first of a model call marks its span with the time to it."""
    if _provider is None:
        return
    span = trace.get_current_span()
    span_id = span.get_span_context().span_id
    if not span.is_recording() or _first_token_of.get() == span_id:
        return
    _first_token_of.set(span_id)
    started = getattr(span, "start_time", None)
    if started:
        span.set_attribute("agent_api.time_to_first_token_s", round((time.time_ns() - started) / 1e9, 6))


def log_ids() -> dict[str, str]:
    """The current trace and span ids, for log lines (empty outside a recorded span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
