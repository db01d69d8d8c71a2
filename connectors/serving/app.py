"""``headrace serve``'s HTTP application (FastAPI): the views over REST, authenticated,
tenant-isolated and rate-limited, with health and Prometheus metrics.

    GET /v1/views                 the views this token may read, with their columns
    GET /v1/views/{view}?…        a page of a view's rows (see query.py for the parameters)
    GET /healthz                  whether each store and the rate limiter's Redis answer
    GET /metrics                  Prometheus: requests, latency, rejections by reason
    GET /openapi.json             generated from the views

Every read is authenticated (:mod:`auth`); a token with a tenant reads only that tenant's rows,
and a request naming another tenant is refused (403), never answered. Roles can hide measures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from headrace.connectors.serving.access import Access, Forbidden
from headrace.connectors.serving.auth import TokenVerifier, Unauthorized
from headrace.connectors.serving.changes import ChangeHub
from headrace.connectors.serving.query import RESERVED, BadRequest, parse_query
from headrace.connectors.serving.ratelimit import RateLimiter
from headrace.connectors.serving.stores import StoreUnavailable
from headrace.connectors.serving.tracing import TraceMiddleware, trace_id, tracer_provider
from headrace.schemas.serving import ServeSettings
from headrace.schemas.views import WINDOW_BOUNDS, ServedView

log = logging.getLogger("headrace.serve")


class BodyLimit:
    """Refuse a request whose body is larger than ``max_bytes`` with 400, without reading it all:
    by its Content-Length when it says, else as the chunks arrive (a query of megabytes would
    otherwise be read, parsed and cached before any check)."""

    def __init__(self, app: Any, max_bytes: int, refused: Callable[[], None]) -> None:
        self.app, self.max_bytes, self.refused = app, max_bytes, refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, int(length))
            return
        seen = 0
        started = False

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send: Any, size: int) -> None:
        self.refused()
        body = json.dumps({"error": f"request too large: {size:,} bytes or more, the limit is {self.max_bytes:,} "
                                    "(serve.max_request_bytes)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def build_app(views: list[ServedView], stores: dict[str, Any], settings: ServeSettings, verifier: TokenVerifier,
              limiter: RateLimiter | None, hub: ChangeHub | None = None, grpc_address: str | None = None) -> Any:
    """The application; ``stores`` maps a store kind (``postgres``, ``embedded``) to its reader,
    ``hub`` feeds subscriptions (one that polls the stores when none is given), and the gRPC
    service listens on ``grpc_address`` (``host:port``) while the application runs."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("headrace_serve_requests", "Requests by view and status", ["view", "status"], registry=registry)
    latency = Histogram("headrace_serve_request_seconds", "Time to answer a view read", ["view"], registry=registry,
                        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
    rejections = Counter("headrace_serve_rejections", "Requests refused, by reason", ["reason"], registry=registry)

    hub = hub or ChangeHub(stores, interval_s=settings.changes_interval / 1000, max_rows=settings.max_rows)
    provider = tracer_provider(settings.otlp_endpoint)
    tracer = provider.get_tracer("headrace.serve")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        server = None
        if grpc_address is not None:
            from headrace.connectors.serving.grpcapi import build_server

            server = build_server(views, stores, settings, verifier, limiter, hub, observe, tracer)
            app.state.grpc_port = server.add_insecure_port(grpc_address)
            if not app.state.grpc_port:
                raise OSError(f"gRPC cannot listen on {grpc_address}: the port is taken or the address is wrong")
            await server.start()
        try:
            yield
        finally:
            if server is not None:
                await server.stop(1)
            hub.close()
            provider.shutdown()  # the spans still queued are exported

    app = FastAPI(title="Headrace views", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes,
                       refused=lambda: rejections.labels("too_large").inc())
    # outermost: every request is traced, the ones refused by the limits above too
    app.add_middleware(TraceMiddleware, tracer=tracer)
    app.state.hub = hub
    by_name = {v.name: v for v in views}

    def observe(view: str, status: int, seconds: float) -> None:
        requests.labels(view, str(status)).inc()
        if status in (401, 403, 429):
            rejections.labels({401: "unauthorized", 403: "forbidden", 429: "rate"}[status]).inc()
        else:
            latency.labels(view).observe(seconds)

    from headrace.connectors.serving.gql import build_graphql

    app.include_router(build_graphql(views, stores, settings, verifier, limiter, hub, observe), prefix="/graphql")

    def error(status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> Response:
        rejections.labels(reason).inc()
        body = {"error": message, **({"trace_id": trace_id()} if status >= 500 else {})}
        return JSONResponse(body, status_code=status, headers=headers)

    def principal(request: Request) -> Access:
        return Access(verifier.verify(request.headers.get("authorization")), settings)

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except Unauthorized as exc:
                log.info("401 %s %s: %s", request.method, request.url.path, exc)
                return error(401, "unauthorized", "unauthorized", {"WWW-Authenticate": "Bearer"})
            except Forbidden as exc:
                log.info("403 %s: %s", request.url.path, exc)
                return error(403, "forbidden", "forbidden")
            except BadRequest as exc:
                return error(400, str(exc), "bad_request")
            except StoreUnavailable as exc:
                log.warning("503 %s: %s", request.url.path, exc)
                return error(503, str(exc), "store_unavailable", {"Retry-After": "5"})
            except Exception:
                log.exception("500 %s", request.url.path)
                return error(500, "internal error", "internal")
        return run

    @guarded
    def list_views(request: Request) -> Response:
        access = principal(request)
        out = []
        hide = access.hidden
        for view in views:
            if not access.may_read(view):
                continue
            out.append({"name": view.name, "store": view.store, "job": view.job,
                        "keys": [n for n, _ in view.view.keys], "window": list(WINDOW_BOUNDS),
                        "measures": {n: t.value for n, t in view.view.measures if n not in hide}})
        return JSONResponse({"views": out})

    def read_view(request: Request, name: str) -> Response:
        view = by_name.get(name)
        if view is None:
            return error(404, f"no view '{name[:80]}'", "unknown_view")
        started = time.perf_counter()
        status = 500

        @guarded
        def answer(request: Request) -> Response:
            nonlocal status
            access = principal(request)
            if limiter is not None:
                decision = limiter.take(access.who.subject)
                if not decision.admitted:
                    return error(429, "rate limit exceeded", f"rate_{decision.reason}",
                                 {"Retry-After": str(decision.retry_after_s)})
            params = access.scope(view, list(request.query_params.multi_items()))
            query = parse_query(view, params, max_rows=settings.max_rows, hidden=access.hidden)
            store = stores.get(view.store)
            if store is None:
                return error(501, f"views in {view.store} are not served yet", "unsupported_store")
            body = orjson.dumps(store.read(query), default=str)
            tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
                return Response(status_code=304, headers={"ETag": tag})
            return Response(body, media_type="application/json", headers={"ETag": tag, "Cache-Control": "no-cache"})

        response = answer(request)
        status = response.status_code
        requests.labels(name, str(status)).inc()
        latency.labels(name).observe(time.perf_counter() - started)
        return response

    app.add_api_route("/v1/views", list_views, methods=["GET"], summary="The views this token may read")
    def reader(name: str) -> Callable[[Request], Response]:
        def route(request: Request) -> Response:
            return read_view(request, name)
        return route

    for view in views:
        app.add_api_route(f"/v1/views/{view.name}", reader(view.name), methods=["GET"], summary=f"Rows of {view.name}",
                          openapi_extra={"parameters": _parameters(view)})

    @app.get("/v1/views/{name}/top", summary="A window's keys ranked by a Redis view's top measure")
    def top(request: Request, name: str) -> Response:
        view = by_name.get(name)
        ranking = stores.get(view.store) if view is not None and view.top is not None else None
        if view is None or ranking is None or not hasattr(ranking, "top"):
            return error(404, f"no ranked view '{name[:80]}' (a sink with top: …)", "unknown_view")

        @guarded
        def answer(request: Request) -> Response:
            from headrace.connectors.serving.query import instant_ms

            access = principal(request)
            allowed = {"window_start", "n"}
            wrong = [k for k in request.query_params if k not in allowed]
            if wrong:
                raise BadRequest(f"unknown parameter '{wrong[0][:60]}': use window_start and n")
            if "window_start" not in request.query_params:
                raise BadRequest("parameter 'window_start' is required (ISO-8601 or epoch ms)")
            start = instant_ms(request.query_params["window_start"], "window_start")
            try:
                n = int(request.query_params.get("n", "10"))
            except ValueError:
                raise BadRequest("parameter 'n': not a whole number") from None
            if not 1 <= n <= settings.max_rows:
                raise BadRequest(f"parameter 'n': between 1 and {settings.max_rows}")
            own = access.tenant(view)
            tenant = None if own is None else (settings.tenant_column, own)
            if view.top in access.hidden:
                raise Forbidden(f"{access.who.subject} may not see {view.top}")
            ranked = ranking.top(view, start, n, tenant)
            return JSONResponse({"view": view.name, "measure": view.top, "rows": ranked})

        return answer(request)

    @app.get("/v1/views/{name}", include_in_schema=False)
    def unknown(request: Request, name: str) -> Response:
        return read_view(request, name)

    @app.get("/healthz")
    def healthz() -> Response:
        checks = {kind: store.check() or "ok" for kind, store in stores.items()}
        limiter_state = "off" if limiter is None else (limiter.degraded or "redis")
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", "stores": checks,
                             "rate_limiter": limiter_state}, status_code=200 if healthy else 503)

    page_files = {"": ("index.html", "text/html; charset=utf-8"), "page/page.js": ("page.js", "text/javascript"),
                  "page/page.css": ("page.css", "text/css")}
    # the page runs only its own script and talks only to this server
    policy = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

    def page(path: str) -> Callable[[], Response]:
        from importlib import resources

        name, media = page_files[path]
        body = (resources.files("headrace.connectors.serving") / "page" / name).read_bytes()

        def route() -> Response:
            return Response(body, media_type=media, headers={"Content-Security-Policy": policy,
                                                             "X-Content-Type-Options": "nosniff",
                                                             "Referrer-Policy": "no-referrer"})
        return route

    for path in page_files:
        app.add_api_route(f"/{path}", page(path), methods=["GET"], include_in_schema=False)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.exception_handler(HTTPException)
    def refused(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    def internal(request: Request, exc: Exception) -> Response:
        log.exception("500 %s", request.url.path)
        return JSONResponse({"error": "internal error", "trace_id": trace_id()}, status_code=500)

    return app


def _parameters(view: ServedView) -> list[dict[str, Any]]:
    """The OpenAPI parameters of a view's read, from its definition."""
    types = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    params: list[dict[str, Any]] = [
        {"name": n, "in": "query", "required": False, "description": f"group key {n} equals (repeat for in)",
         "schema": {"type": "array", "items": {"type": types[t.value]}}, "style": "form", "explode": True}
        for n, t in view.view.keys]
    described = {"since": "window start at or after: ISO-8601, epoch ms, or a duration back from now (1h)",
                 "until": "window start before (same forms as since)",
                 "sort": f"a key column, '-' first for descending: {', '.join(view.view.key_names)}",
                 "fields": "comma-separated columns to return", "limit": "rows per page (1..max)",
                 "cursor": "next_cursor of the page before"}
    params += [{"name": n, "in": "query", "required": False, "description": described[n],
                "schema": {"type": "integer" if n == "limit" else "string"}} for n in RESERVED]
    return params
