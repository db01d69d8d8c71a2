"""The Confluent Schema Registry REST API over :class:`headrace.schemas.registry.SchemaRegistry`:
the parts clients use (Confluent's serializers, ``SchemaRegistryClient``, other registries'
tools). ``headrace registry serve`` runs it, bound to 127.0.0.1 unless told otherwise.

=========================================================  ==========================================
``GET /subjects``                                          subject names
``GET /subjects/{s}/versions``                             version numbers
``GET /subjects/{s}/versions/{v|latest}``                  id, schema, schemaType, references
``GET /subjects/{s}/versions/{v}/schema``                  the schema alone
``POST /subjects/{s}/versions``                            register (checked in the subject's mode)
``POST /subjects/{s}``                                     look a schema up in a subject
``GET /schemas/ids/{id}``                                  a schema by id
``GET|PUT /config``, ``GET|PUT /config/{s}``               compatibility, global and per subject
``POST /compatibility/subjects/{s}/versions/{v|latest}``   ``{"is_compatible": …, "messages": […]}``
=========================================================  ==========================================

Errors answer as Confluent's do: ``{"error_code": 40401, "message": "Subject 'x' not found."}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from headrace.schemas.errors import ServiceError
from headrace.schemas.profile import Profile
from headrace.schemas.registry import RegistryError, SchemaRegistry

MEDIA = "application/vnd.schemaregistry.v1+json"


def create_app(registry: SchemaRegistry) -> FastAPI:
    app = FastAPI(title="Headrace schema registry", docs_url=None, redoc_url=None, openapi_url=None)

    def answer(body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, media_type=MEDIA)

    @app.exception_handler(RegistryError)
    async def refused(_: Request, exc: RegistryError) -> JSONResponse:
        return answer({"error_code": exc.code, "message": str(exc)}, exc.status)

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise RegistryError("the request body is not JSON", 42201, 422) from None
        if not isinstance(body, dict):
            raise RegistryError("the request body must be a JSON object", 42201, 422)
        return body

    def schema_of(body: dict[str, Any]) -> tuple[str, str]:
        schema = body.get("schema")
        if not isinstance(schema, str):
            raise RegistryError("'schema' (a string) is required", 42201, 422)
        return schema, str(body.get("schemaType") or "AVRO").upper()

    def references_of(body: dict[str, Any]) -> tuple[tuple[str, str, int], ...]:
        refs = body.get("references") or []
        try:
            return tuple((str(r["name"]), str(r["subject"]), int(r["version"])) for r in refs)
        except (KeyError, TypeError, ValueError):
            raise RegistryError("each reference needs a name, a subject and a version", 42201, 422) from None

    def listed(references: Any) -> list[dict[str, Any]]:
        return [{"name": n, "subject": s, "version": v} for n, s, v in references]

    def entry(found: Any) -> dict[str, Any]:
        out = {"subject": found.subject, "version": found.version, "id": found.id, "schema": found.schema}
        if found.schema_type != "AVRO":
            out["schemaType"] = found.schema_type
        if found.references:
            out["references"] = listed(found.references)
        return out

    @app.get("/subjects")
    async def subjects() -> JSONResponse:
        return answer(registry.subjects())

    @app.get("/subjects/{subject}/versions")
    async def versions(subject: str) -> JSONResponse:
        return answer(registry.versions(subject))

    @app.get("/subjects/{subject}/versions/{version}")
    async def version(subject: str, version: str) -> JSONResponse:
        return answer(entry(registry.version(subject, _version(version))))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    async def version_schema(subject: str, version: str) -> JSONResponse:
        return answer(json.loads(registry.version(subject, _version(version)).schema))

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> JSONResponse:
        body = await body_of(request)
        schema, kind = schema_of(body)
        found = registry.register(subject, schema, kind, references_of(body))
        return answer({"id": found.id, "version": found.version, "subject": subject})

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> JSONResponse:
        body = await body_of(request)
        schema, kind = schema_of(body)
        return answer(entry(registry.lookup(subject, schema, kind, references_of(body))))

    @app.get("/schemas/ids/{schema_id}")
    async def by_id(schema_id: int) -> JSONResponse:
        schema, kind = registry.by_id(schema_id)
        refs = registry.references(schema_id)
        return answer({"schema": schema, **({"schemaType": kind} if kind != "AVRO" else {}),
                       **({"references": listed(refs)} if refs else {})})

    @app.get("/config")
    async def global_config() -> JSONResponse:
        return answer({"compatibilityLevel": registry.compatibility(None)})

    @app.put("/config")
    async def set_global(request: Request) -> JSONResponse:
        mode = (await body_of(request)).get("compatibility", "")
        return answer({"compatibility": registry.set_compatibility(str(mode))})

    @app.get("/config/{subject}")
    async def subject_config(subject: str, defaultToGlobal: bool = False) -> JSONResponse:  # noqa: N803
        mode = registry.subject_mode(subject)
        if mode is None and not defaultToGlobal:
            raise RegistryError(f"Subject '{subject}' does not have subject-level compatibility configured",
                                40408, 404)
        return answer({"compatibilityLevel": mode or registry.compatibility(None)})

    @app.put("/config/{subject}")
    async def set_subject(subject: str, request: Request) -> JSONResponse:
        mode = (await body_of(request)).get("compatibility", "")
        return answer({"compatibility": registry.set_compatibility(str(mode), subject)})

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatible(subject: str, version: str, request: Request, verbose: bool = False) -> JSONResponse:
        body = await body_of(request)
        schema, kind = schema_of(body)
        up_to = _version(version)
        against = [r for r in registry.history(subject) if up_to == "latest" or r.version <= int(up_to)]
        problems = registry.problems(subject, registry.canonical(schema, kind), kind, against,
                                     (against[-1].version + 1) if against else 1, references=references_of(body))
        verdict: dict[str, Any] = {"is_compatible": not problems}
        if verbose or problems:
            verdict["messages"] = problems
        return answer(verdict)

    return app


def _version(text: str) -> int | str:
    if text == "latest" or text == "-1":
        return "latest"
    try:
        number = int(text)
    except ValueError:
        raise RegistryError(f"The specified version '{text}' is not a valid version id", 42202, 422) from None
    if number < 1:
        raise RegistryError(f"The specified version '{text}' is not a valid version id", 42202, 422)
    return number


def serve(store: str, host: str = "127.0.0.1", port: int = 8085, postgres: dict[str, Any] | None = None,
          formats: Mapping[str, Any] | None = None) -> None:
    """Serve the registry in SQLite file ``store``, or in PostgreSQL (``postgres``: connection settings).
    ``formats``: the format kinds by name (their compatibility rules), ``jobs/registry.py``'s FORMATS."""
    import uvicorn

    registry = SchemaRegistry(store, postgres=postgres, formats=formats)
    uvicorn.run(create_app(registry), host=host, port=port, log_level="warning", access_log=False)


def serve_profile(profile: Profile | None, store: str | None, host: str, port: int, formats: Mapping[str, Any],
                  say: Callable[[str], None]) -> None:
    """``headrace registry serve``: in the profile's PostgreSQL under a service profile (shared by
    every server of it), else in an SQLite file (``store``, default ``.headrace/registry.sqlite``)."""
    from headrace.connectors.postgres.connection import PostgresConnection

    postgres = profile.find(PostgresConnection) if profile is not None else None
    if postgres is not None and not store:
        import psycopg

        try:
            with psycopg.connect(**postgres.conninfo()):
                pass
        except psycopg.OperationalError as exc:
            raise ServiceError(f"the registry's store, PostgreSQL at {postgres.where}, does not answer: "
                               f"{str(exc).strip().splitlines()[0]}",
                               hint="start it, or fix 'postgres' in the profile") from None
        assert profile is not None
        say(f"schema registry on http://{host}:{port} (store: PostgreSQL {postgres.where}/{postgres.database}, "
            f"profile '{profile.name}')")
        serve("", host, port, postgres=postgres.conninfo(), formats=formats)
        return
    path = Path(store or ".headrace/registry.sqlite")
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"schema registry on http://{host}:{port} (store {path})")
    serve(str(path), host, port, formats=formats)
