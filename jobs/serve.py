"""``headrace serve``: the views of a project's jobs, served to analysts with the profile's stores,
authentication and rate limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.jobs.catalog import load_catalog
from headrace.jobs.profiles import Profile
from headrace.schemas.errors import HeadraceError


def readers(profile: Profile, timeout_ms: int) -> dict[str, Any]:
    """A reader per store kind the profile reaches: the embedded profile holds every view in SQLite."""
    from headrace.connectors.serving.stores import EmbeddedViews, PostgresViews

    if profile.embedded is not None:
        embedded = EmbeddedViews(Path(profile.embedded.data_dir), timeout_ms)
        return {"postgres": embedded, "redis": embedded, "influx": embedded}
    from headrace.connectors.serving.stores import InfluxViews, RedisViews

    stores: dict[str, Any] = {}
    redis = profile.services.get("redis")
    if redis is not None:
        stores["redis"] = RedisViews(redis.client_kwargs(), timeout_ms)
    influx = profile.services.get("influx")
    if influx is not None:
        stores["influx"] = InfluxViews(influx.url, influx.database or influx.bucket or "", influx_auth(influx),
                                       timeout_ms)
    if profile.postgres is not None:
        conninfo = profile.postgres.conninfo()
        settings = profile.serve
        if settings.postgres_replica_host:
            conninfo = {**conninfo, "host": settings.postgres_replica_host,
                        "port": settings.postgres_replica_port or conninfo["port"]}
        stores["postgres"] = PostgresViews(conninfo, timeout_ms)
    return stores


def influx_auth(connection: Any) -> str | None:
    """The Authorization header of InfluxQL reads: a v2 token, or v1 basic credentials."""
    import base64

    if connection.mode == "v2" and connection.token is not None:
        return f"Token {connection.token.get_secret_value()}"
    if connection.username:
        secret = connection.password.get_secret_value() if connection.password else ""
        return "Basic " + base64.b64encode(f"{connection.username}:{secret}".encode()).decode()
    return None


def build(project: Path, profile: Profile, grpc_address: str | None = None) -> Any:
    """The application for ``project``'s views under ``profile`` (tests build it this way too)."""
    from headrace.connectors.serving.app import build_app
    from headrace.connectors.serving.auth import TokenVerifier
    from headrace.connectors.serving.ratelimit import RateLimiter

    settings = profile.serve
    catalog = load_catalog(project)
    try:
        verifier = TokenVerifier(settings.auth, base=project)
    except ValueError as exc:
        raise HeadraceError(str(exc), hint="add serve: {auth: {hs256_secret: \"${HEADRACE_JWT_SECRET}\"}} "
                                           "to the profile") from None
    limiter = None
    if settings.rate is not None:
        redis = profile.services.get("redis")
        limiter = RateLimiter(settings.rate, redis.client_kwargs() if redis is not None else None)
    from headrace.connectors.serving.changes import ChangeHub

    stores = readers(profile, settings.timeout)
    listen = profile.postgres.conninfo() if profile.postgres is not None and profile.embedded is None else None
    hub = ChangeHub(stores, listen, interval_s=settings.changes_interval / 1000, max_rows=settings.max_rows)
    return build_app(list(catalog.views), stores, settings, verifier, limiter, hub, grpc_address)


def serve(project: Path, profile: Profile, host: str | None, port: int | None,
          say: Callable[[str], None] = print, grpc_port: int | None = None) -> int:
    try:
        import uvicorn
    except ImportError:
        raise HeadraceError("headrace serve needs its web stack", hint="pip install 'headrace[serve]'") from None
    settings = profile.serve
    host, port = host or settings.host, port or settings.port
    grpc_port = port + 1 if grpc_port is None and settings.grpc_port is None else (
        grpc_port if grpc_port is not None else settings.grpc_port)
    app = build(project, profile, f"{host}:{grpc_port}" if grpc_port else None)
    say(f"serving the views of {project.resolve()} (profile '{profile.name}', every read needs a bearer token):\n"
        f"  REST     http://{host}:{port}/v1/views   (OpenAPI: /openapi.json; /healthz, /metrics)\n"
        f"  GraphQL  http://{host}:{port}/graphql    (subscriptions: ws://{host}:{port}/graphql)\n"
        + (f"  gRPC     {host}:{grpc_port}              (schemas/headrace_views.proto)\n" if grpc_port else "")
        + f"  web page http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools",
                ws="websockets-sansio")
    return 0
