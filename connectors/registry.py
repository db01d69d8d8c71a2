"""A client of the Confluent Schema Registry REST API: the writer schemas of a subject.

Used when a job is compiled: a source in the Confluent wire format gets every version of its
subject the registry holds then, keyed by schema id, so that the JVM decoder resolves each one
against the job's schema once. Works with any registry that speaks the API (Headrace's
``headrace registry serve``, Confluent's, Karapace, Redpanda's). Basic auth from the profile
(its password from the environment through ``${VAR}``); the password never appears in a message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from headrace.schemas.errors import ServiceError
from headrace.schemas.kinds import FormatKind
from headrace.schemas.profile import Profile

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _get(profile: Profile, path: str, timeout_s: float = 10.0, body: Any = None) -> Any:
    registry = profile.registry
    if registry is None:
        raise ServiceError(f"profile '{profile.name}' names no schema registry, which a source in the Confluent "
                           "wire format needs", hint="add 'registry: {url: http://127.0.0.1:8085}' to the profile")
    url = registry.url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE})
    if registry.username is not None:
        secret = registry.password.get_secret_value() if registry.password is not None else ""
        token = base64.b64encode(f"{registry.username}:{secret}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
            message = answer.get("message", "")
        except ValueError:
            message = exc.reason
        raise ServiceError(f"schema registry at {registry.url} answered {exc.code} for {path}: {message}",
                           hint="register the schema, or fix 'registry' in the profile or source.format.subject"
                           ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(f"cannot reach the schema registry at {registry.url}: {reason}",
                           hint="start it ('headrace registry serve') or fix 'registry.url' in the profile") from None


def local_registry(profile: Profile, fmt: FormatKind | None = None) -> Any:
    """The embedded profile's registry (``<data_dir>/registry.sqlite``, no server) when the profile
    names no other; None for a profile that has one, or a service profile without. ``fmt``: the
    format of schemas to be registered (its compatibility rules)."""
    if profile.registry is not None or profile.embedded is None:
        return None
    from pathlib import Path

    from headrace.schemas.registry import SchemaRegistry

    data_dir = Path(profile.embedded.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SchemaRegistry(data_dir / "registry.sqlite", formats={fmt.name: fmt} if fmt is not None else None)


def subject_schemas(profile: Profile, subject: str, schema_type: str) -> dict[int, str]:
    """``{schema id: schema text}`` of every version of ``subject``, each of ``schema_type``."""
    local = local_registry(profile)
    if local is not None:
        found = local.history(subject)
        if not found:
            raise ServiceError(f"the embedded registry ({local.where}) has no subject '{subject}'",
                               hint="run 'headrace generate --job JOB' (it registers the job's schema) "
                                    "or 'headrace schema publish JOB'")
        wrong = next((v for v in found if v.schema_type != schema_type), None)
        if wrong is not None:
            raise ServiceError(f"subject '{subject}' version {wrong.version} is a {wrong.schema_type} schema, "
                               f"not {schema_type}", hint="point source.format.subject at the subject of this topic")
        return {v.id: v.schema for v in found}
    return {schema_id: text for schema_id, (text, _) in _entries(profile, subject, schema_type).items()}


def _entries(profile: Profile, subject: str, schema_type: str) -> dict[int, tuple[str, list[dict[str, Any]]]]:
    """``{schema id: (schema text, its references)}`` of every version, in one pass over them."""
    quoted = urllib.parse.quote(subject, safe="")
    schemas: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    for version in _get(profile, f"/subjects/{quoted}/versions"):
        entry = _get(profile, f"/subjects/{quoted}/versions/{int(version)}")
        kind = entry.get("schemaType", "AVRO")
        if kind != schema_type:
            raise ServiceError(f"subject '{subject}' version {version} is a {kind} schema, not {schema_type}",
                               hint="point source.format.subject at the subject of this topic's schemas")
        schemas[int(entry["id"])] = (str(entry["schema"]), list(entry.get("references") or []))
    return schemas


@dataclass(frozen=True)
class Version:
    """One version of a subject, as the registry holds it."""

    subject: str
    version: int
    id: int
    schema: str
    schema_type: str


def subjects(profile: Profile) -> list[str]:
    local = local_registry(profile)
    if local is not None:
        return list(local.subjects())
    return [str(s) for s in _get(profile, "/subjects")]


def versions(profile: Profile, subject: str) -> list[Version]:
    """Every version of ``subject``, oldest first (empty when the subject does not exist)."""
    local = local_registry(profile)
    if local is not None:
        return [Version(r.subject, r.version, r.id, r.schema, r.schema_type) for r in local.history(subject)]
    quoted = urllib.parse.quote(subject, safe="")
    try:
        numbers = _get(profile, f"/subjects/{quoted}/versions")
    except ServiceError as exc:
        if " answered 404 " in str(exc):
            return []
        raise
    out = []
    for number in sorted(int(n) for n in numbers):
        entry = _get(profile, f"/subjects/{quoted}/versions/{number}")
        out.append(Version(subject, number, int(entry["id"]), str(entry["schema"]),
                           str(entry.get("schemaType", "AVRO"))))
    return out


def mode(profile: Profile, subject: str) -> str:
    """The subject's compatibility mode (the global one when it has none of its own)."""
    local = local_registry(profile)
    if local is not None:
        return str(local.compatibility(subject))
    quoted = urllib.parse.quote(subject, safe="")
    return str(_get(profile, f"/config/{quoted}?defaultToGlobal=true")["compatibilityLevel"])


def register(profile: Profile, subject: str, schema: str, fmt: FormatKind) -> int:
    """Register ``schema`` (of format ``fmt``) under ``subject``; its id (the registry refuses an
    incompatible one)."""
    schema_type = fmt.schema_type
    local = local_registry(profile, fmt)
    if local is not None:
        from headrace.schemas.registry import RegistryError

        try:
            return int(local.register(subject, schema, schema_type).id)
        except RegistryError as exc:
            raise ServiceError(f"the embedded registry refused it: {exc}", hint="see 'headrace schema check'") from None
    quoted = urllib.parse.quote(subject, safe="")
    body: dict[str, Any] = {"schema": schema}
    if schema_type != "AVRO":
        body["schemaType"] = schema_type
    return int(_get(profile, f"/subjects/{quoted}/versions", body=body)["id"])


def subject_writers(profile: Profile, subject: str, schema_type: str) -> dict[int, tuple[str, dict[str, str]]]:
    """``{schema id: (schema text, {reference name: its text})}`` of every version of ``subject``,
    each of ``schema_type``, with the schemas its references name, transitively (Avro: named
    types it takes from other subjects; Protobuf: the files it imports)."""
    local = local_registry(profile)
    if local is not None:
        subject_schemas(profile, subject, schema_type)  # says what is missing or of another type
        return {v.id: (v.schema, local.resolved(v.references)) for v in local.history(subject)}
    return {schema_id: (text, _referenced(profile, references, set()))
            for schema_id, (text, references) in _entries(profile, subject, schema_type).items()}


def _referenced(profile: Profile, references: list[dict[str, Any]], seen: set[tuple[str, int]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ref in references:
        key = (str(ref["subject"]), int(ref["version"]))
        if key in seen:
            continue
        seen.add(key)
        entry = _get(profile, f"/subjects/{urllib.parse.quote(key[0], safe='')}/versions/{key[1]}")
        found[str(ref["name"])] = str(entry["schema"])
        found.update(_referenced(profile, entry.get("references") or [], seen))
    return found
