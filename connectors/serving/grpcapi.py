"""The views over gRPC (``schemas/headrace_views.proto``): unary ``Query`` and server-streaming
``Subscribe``, on ``grpc.aio`` in the same event loop (and process) as the HTTP server.

The Python code for the service is generated from the ``.proto`` by grpcio-tools
(:func:`generated`): once per version of the file, into Headrace's cache folder, and on demand
into any folder with ``headrace grpc-stubs --out DIR`` (for clients).

Authentication, tenant isolation, hidden measures and rate limits are those of REST: the
``authorization: Bearer <JWT>`` metadata, then the same :class:`Access` rules. A refusal is a gRPC
status with a one-line message (UNAUTHENTICATED says nothing more).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from headrace.connectors.serving.access import Access, Forbidden
from headrace.connectors.serving.auth import TokenVerifier, Unauthorized
from headrace.connectors.serving.query import BadRequest, parse_query
from headrace.connectors.serving.stores import StoreUnavailable
from headrace.schemas.views import ServedView

log = logging.getLogger("headrace.serve")

MODULE = "headrace_views"


def proto_file() -> Path:
    """The service definition, wherever the package is installed."""
    from importlib import resources

    return Path(str(resources.files("headrace.schemas") / f"{MODULE}.proto"))


def build_stubs(out: Path) -> Path:
    """Generate ``headrace_views_pb2.py`` and ``headrace_views_pb2_grpc.py`` into ``out``."""
    from headrace.schemas.protoc import run_protoc

    out.mkdir(parents=True, exist_ok=True)
    run_protoc(proto_file(), f"--python_out={out}", f"--grpc_python_out={out}")
    return out


def generated() -> tuple[ModuleType, ModuleType]:
    """The message and service modules, built from the ``.proto`` once per version of it."""
    proto = proto_file()
    digest = hashlib.sha256(proto.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "headrace" / "grpc" / digest
    if not (cache / f"{MODULE}_pb2_grpc.py").exists():
        staging = cache.with_name(f"{digest}.{os.getpid()}")
        build_stubs(staging)
        try:
            staging.rename(cache)
        except OSError:  # another process built it first
            pass
    if str(cache) not in sys.path:
        sys.path.insert(0, str(cache))
    return importlib.import_module(f"{MODULE}_pb2"), importlib.import_module(f"{MODULE}_pb2_grpc")


def to_value(messages: ModuleType, value: Any) -> Any:
    if isinstance(value, list):  # a top_k measure: [{"value": v, "count": n}, ...]
        return messages.Value(ranked=messages.Ranked(values=[
            messages.RankedValue(value=to_value(messages, v["value"]), count=v["count"]) for v in value]))
    if isinstance(value, bool):
        return messages.Value(boolean=value)
    if isinstance(value, int):
        return messages.Value(integer=value)
    if isinstance(value, float):
        return messages.Value(number=value)
    return messages.Value(text=str(value))


def to_row(messages: ModuleType, row: dict[str, Any]) -> Any:
    return messages.Row(columns={k: to_value(messages, v) for k, v in row.items() if v is not None})


def from_value(value: Any) -> Any:
    """A received Value as Python (a top_k measure as its list of {"value": v, "count": n})."""
    kind = value.WhichOneof("kind")
    if kind == "ranked":
        return [{"value": from_value(v.value), "count": v.count} for v in value.ranked.values]
    return getattr(value, kind)


def from_row(row: Any) -> dict[str, Any]:
    """A received row as a dict (for clients and tests)."""
    return {name: from_value(value) for name, value in row.columns.items()}


def build_server(views: list[ServedView], stores: dict[str, Any], settings: Any, verifier: TokenVerifier,
                 limiter: Any, hub: Any, observe: Callable[[str, int, float], None], tracer: Any = None) -> Any:
    """A ``grpc.aio`` server with the Views service (not yet bound or started); each call is a span
    of ``tracer`` (see ``tracing.py``)."""
    import grpc
    from headrace.connectors.serving.tracing import grpc_span, trace_id
    from opentelemetry import trace
    from opentelemetry.trace import NoOpTracer, Status, StatusCode

    tracer = tracer or NoOpTracer()

    messages, services = generated()
    by_name = {v.name: v for v in views}

    async def refuse(context: Any, code: Any, message: str, status: int) -> None:
        observe("grpc", status, 0.0)
        trace.get_current_span().set_attribute("rpc.grpc.status_code", int(code.value[0]))
        if status >= 500:  # the server's failure: the trace id goes along, as in a REST 5xx body
            trace.get_current_span().set_status(Status(StatusCode.ERROR, message[:200]))
            log.warning("%d grpc: %s", status, message)
            message = f"{message} (trace_id {trace_id()})"
        await context.abort(code, message)

    async def admit(context: Any, name: str) -> tuple[ServedView, Access]:
        metadata = dict(context.invocation_metadata() or ())
        try:
            access = Access(verifier.verify(metadata.get("authorization")), settings)
        except Unauthorized:
            await refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unauthorized", 401)
        view = by_name.get(name)
        if view is None:
            await refuse(context, grpc.StatusCode.NOT_FOUND, f"no view '{name[:80]}'", 404)
        if limiter is not None:
            decision = limiter.take(access.who.subject)
            if not decision.admitted:
                await refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"rate limit exceeded: retry after {decision.retry_after_s}s", 429)
        return view, access  # type: ignore[return-value]

    def params_of(request: Any) -> list[tuple[str, str]]:
        return [(f.column, v) for f in request.where for v in f.values]

    async def refusing(context: Any, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(call)
        except Forbidden:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, "forbidden", 403)
        except BadRequest as exc:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), 400)
        except StoreUnavailable as exc:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, str(exc), 503)
        observe("grpc", 200, time.perf_counter() - started)
        return result

    class Views(services.ViewsServicer):  # type: ignore[name-defined,misc]
        async def Query(self, request: Any, context: Any) -> Any:  # noqa: N802 (the .proto's name)
            with trace.use_span(grpc_span(tracer, context, "Query", request.view), end_on_exit=True,
                                record_exception=False, set_status_on_exception=False):
                return await self.query(request, context)

        async def query(self, request: Any, context: Any) -> Any:
            view, access = await admit(context, request.view)

            def read() -> Any:
                params = params_of(request) + [(n, v) for n, v in (
                    ("since", request.since), ("until", request.until), ("sort", request.sort),
                    ("cursor", request.cursor), ("fields", ",".join(request.fields))) if v]
                params.append(("limit", str(request.limit or 100)))
                query = parse_query(view, access.scope(view, params), max_rows=settings.max_rows,
                                    hidden=access.hidden)
                store = stores.get(view.store)
                if store is None:
                    raise BadRequest(f"views in {view.store} are not served")
                return store.read(query)

            body = await refusing(context, read)
            return messages.QueryReply(rows=[to_row(messages, r) for r in body["rows"]],
                                       next_cursor=body.get("next_cursor") or "", note=body.get("note") or "")

        async def Subscribe(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
            span = grpc_span(tracer, context, "Subscribe", request.view)
            try:
                with trace.use_span(span, end_on_exit=False, record_exception=False,
                                    set_status_on_exception=False):  # not across the yields below
                    subscription = await self.subscription(request, context)
                async for row in self.rows(subscription):
                    yield row
            finally:
                span.end()

        async def subscription(self, request: Any, context: Any) -> Any:
            view, access = await admit(context, request.view)

            def accept() -> Any:
                typed = parse_query(view, params_of(request), max_rows=settings.max_rows).filters
                return access.rows_filter(view, typed)

            return await hub.subscribe(view, await refusing(context, accept))

        async def rows(self, subscription: Any) -> AsyncIterator[Any]:
            try:
                async for batch in subscription.batches():
                    for row in batch:
                        yield to_row(messages, row)
            finally:
                hub.unsubscribe(subscription)

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 20)])
    services.add_ViewsServicer_to_server(Views(), server)
    return server
