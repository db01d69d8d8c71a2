"""OpenTelemetry traces of ``headrace serve``: one server span per request on every protocol —
REST and GraphQL over HTTP, GraphQL subscriptions over WebSocket (one span a connection), gRPC
calls and streams — continuing the caller's trace when it sends W3C ``traceparent``.

Spans are exported over OTLP/HTTP when an endpoint is configured (the profile's
``serve.otlp_endpoint``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``); without one they still give every
request its trace id, which is in every log line written while it runs (``connectors/logs.py``),
in the ``X-Trace-Id`` response header (gRPC: trailing metadata ``x-trace-id``) and in the body of
every 5xx answer, so a user's "it failed" can be found in the logs.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def tracer_provider(endpoint: str | None, service: str = "headrace-serve") -> TracerProvider:
    """A provider of this server's spans (not the process-wide one: each app has its own)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else None)
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5),
                                                       schedule_delay_millis=1000))
    return provider


def trace_id() -> str:
    """The current span's trace id (32 hex digits), or "" outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def _route(path: str) -> str:
    """A span name that does not grow with the values in the path (the view's name is an attribute)."""
    if path.startswith("/v1/views/"):
        return "/v1/views/{view}"
    return path if path in ("/v1/views", "/graphql", "/healthz", "/metrics", "/openapi.json", "/") else "other"


class TraceMiddleware:
    """ASGI: a server span around each HTTP request and WebSocket connection."""

    def __init__(self, app: Any, tracer: Any) -> None:
        self.app, self.tracer = app, tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        path = scope.get("path", "")
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        attributes = {"http.request.method": method, "url.path": path[:200], "network.protocol.name": scope["type"]}
        if path.startswith("/v1/views/"):
            attributes["headrace.view"] = path.removeprefix("/v1/views/")[:80]
        with self.tracer.start_as_current_span(f"{method} {_route(path)}", context=extract(headers),
                                               kind=SpanKind.SERVER, attributes=attributes) as span:
            ident = format(span.get_span_context().trace_id, "032x")

            async def traced_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    message = {**message, "headers": [*message.get("headers", ()), (b"x-trace-id", ident.encode())]}
                await send(message)

            await self.app(scope, receive, traced_send)


def grpc_span(tracer: Any, context: Any, method: str, view: str) -> Any:
    """A server span for a gRPC call, started but not made current (a stream yields across
    contexts: use ``trace.use_span(span, end_on_exit=...)`` around the parts that run in it), the
    caller's ``traceparent`` metadata continued; its trace id goes back in the trailing metadata."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    span = tracer.start_span(f"grpc headrace.Views/{method}", context=extract(metadata), kind=SpanKind.SERVER,
                             attributes={"rpc.system": "grpc", "rpc.service": "headrace.Views",
                                         "rpc.method": method, "headrace.view": view[:80]})
    context.set_trailing_metadata((("x-trace-id", format(span.get_span_context().trace_id, "032x")),))
    return span
