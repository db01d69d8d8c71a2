"""``headrace serve``: the views of a project's jobs, served to analysts with the profile's stores,
authentication and rate limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.jobs.catalog import load_catalog
from headrace.jobs.registry import SINKS
from headrace.schemas.errors import HeadraceError
from headrace.schemas.profile import Profile


def readers(profile: Profile, timeout_ms: int) -> dict[str, Any]:
    """A reader per sink kind whose store the profile reaches (each kind makes its own); the
    embedded profile holds every view in SQLite."""
    from headrace.connectors.serving.stores import EmbeddedViews

    if profile.embedded is not None:
        embedded = EmbeddedViews(Path(profile.embedded.data_dir), timeout_ms)
        return {name: embedded for name in SINKS}
    found = {}
    for name, kind in SINKS.items():
        reader = kind.reader(profile, timeout_ms)
        if reader is not None:
            found[name] = reader
    return found


def build(project: Path, profile: Profile, grpc_address: str | None = None) -> Any:
    """The application for ``project``'s views under ``profile`` (tests build it this way too)."""
    from headrace.connectors.serving.app import build_app
    from headrace.connectors.serving.auth import TokenVerifier
    from headrace.connectors.serving.changes import ChangeHub
    from headrace.connectors.serving.ratelimit import RateLimiter

    settings = profile.serve
    catalog = load_catalog(project)
    try:
        verifier = TokenVerifier(settings.auth, base=project)
    except ValueError as exc:
        raise HeadraceError(str(exc), hint="add serve: {auth: {hs256_secret: \"${HEADRACE_JWT_SECRET}\"}} "
                                           "to the profile") from None
    limiter = RateLimiter.for_profile(settings.rate, profile) if settings.rate is not None else None
    stores = readers(profile, settings.timeout)
    hub = ChangeHub(stores, interval_s=settings.changes_interval / 1000, max_rows=settings.max_rows)
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
