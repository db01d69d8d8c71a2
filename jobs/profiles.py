"""Profiles: where a job's connections come from. Job specs never hold addresses or secrets.

``local`` (the default) is embedded: sources read ``<data_dir>/<topic>.jsonl`` files, sinks
write a SQLite file and JSON-lines files, and no server is needed. Other profiles name real
services; ``${ENV_VAR}`` anywhere in a profile is replaced from the environment, so secrets
stay out of files::

    profiles:
      prod:
        kafka: {bootstrap_servers: "kafka-1:9092", properties: {security.protocol: SASL_SSL}}
        postgres: {host: db.internal, database: analytics, user: headrace,
                   password: "${HEADRACE_PG_PASSWORD}"}
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

from headrace.connectors.serving.settings import ServeSettings
from headrace.jobs.spec import Duration, SpecModel
from headrace.jobs.yamlsrc import KeyPath, SourceMap, load_yaml
from headrace.schemas.errors import SpecError
from pydantic import Field, SecretStr, ValidationError, model_validator

DEFAULT_PROFILES = Path(str(importlib.resources.files("headrace.jobs").joinpath("profiles.yaml")))
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EmbeddedConnection(SpecModel):
    """Everything in local files under ``data_dir`` (relative to the working directory)."""

    data_dir: str = ".headrace/local"


class KafkaConnection(SpecModel):
    bootstrap_servers: str
    properties: dict[str, str] = Field(default_factory=dict)


class PostgresConnection(SpecModel):
    host: str = "127.0.0.1"
    port: int = 5432
    database: str
    user: str
    password: SecretStr | None = None

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def conninfo(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (the password never enters a string)."""
        info: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.database,
                                "user": self.user, "connect_timeout": 5}
        if self.password is not None:
            info["password"] = self.password.get_secret_value()
        return info


class StateStorage(SpecModel):
    """Where jobs keep durable state (service profiles).

    Local paths are relative to the working directory; a cluster names storage every
    TaskManager reaches, e.g. ``s3://bucket/headrace/checkpoints`` (with Flink's S3 plugin).
    Each job checkpoints under ``<checkpoints>/<job name>/``.
    """

    checkpoints: str = ".headrace/checkpoints"
    savepoints: str = ".headrace/savepoints"

    @staticmethod
    def uri(location: str) -> str:
        """A location as Flink wants it: URIs unchanged, local paths as absolute file:// URIs."""
        return location if "://" in location else Path(location).resolve().as_uri()

    @property
    def checkpoints_local(self) -> Path | None:
        """The checkpoint directory when it is on this machine (so runs can find what to resume)."""
        if "://" not in self.checkpoints:
            return Path(self.checkpoints)
        return Path(self.checkpoints.removeprefix("file://")) if self.checkpoints.startswith("file://") else None


class MaskSettings(SpecModel):
    """The ``mask`` step's key: the environment variable holding it in the processes that run
    tasks (this one for local runs, the TaskManagers' on a cluster), at least 16 characters."""

    key_env: str = Field(default="HEADRACE_MASK_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegistryConnection(SpecModel):
    """A Confluent-compatible schema registry (Headrace's own ``headrace registry serve``, or any
    other): where binary formats in the Confluent wire format find their writer schemas."""

    url: str = Field(pattern=r"^https?://")
    username: str | None = None
    password: SecretStr | None = None
    #: how often a running job asks for the subject's new versions (an unknown id asks at once)
    refresh: Duration = 300_000

    def runtime(self) -> dict[str, Any]:
        """What the JVM decoders get in their spec: never the password (see ``runner.registry_secret``)."""
        return {"url": self.url, "refresh_ms": self.refresh,
                **({"username": self.username} if self.username else {})}


class ClusterConnection(SpecModel):
    """The Flink session cluster jobs are submitted to (its REST address)."""

    rest: str = "http://127.0.0.1:8081"


class Profile(SpecModel):
    """Connections for one environment: ``embedded``, or ``kafka`` and the stores its sinks use.

    ``postgres`` is a field of its own; every other store's section (``redis:``, ``influx:``) is
    declared by its sink kind (``SinkKind.section`` and ``.connection``) and kept in ``services``.
    """

    name: str = "local"
    embedded: EmbeddedConnection | None = None
    kafka: KafkaConnection | None = None
    postgres: PostgresConnection | None = None
    state: StateStorage = StateStorage()
    cluster: ClusterConnection = ClusterConnection()
    registry: RegistryConnection | None = None
    mask: MaskSettings = MaskSettings()
    serve: ServeSettings = ServeSettings()
    flink: dict[str, str] = Field(default_factory=dict)
    #: the connection of each store section a sink kind declares (validated by its own model)
    services: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Profile:
        if self.embedded is None and self.kafka is None:
            raise ValueError("a profile is either 'embedded: {}' or names 'kafka' (and the stores its jobs use)")
        if self.embedded is not None and (self.kafka or self.postgres or self.services):
            raise ValueError("an embedded profile cannot also name 'kafka' or a store")
        return self

    def service(self, section: str) -> Any:
        """A store's connection, or a one-line error naming the section to add."""
        found = self.postgres if section == "postgres" else self.services.get(section)
        if found is None:
            raise SpecError(f"profile '{self.name}' names no '{section}' connection, which a sink of this job needs",
                            hint=f"add '{section}: {{...}}' to the profile (see README, 'Profiles')")
        return found


def _service_sections(raw: dict[str, Any], profile: str, smap: SourceMap) -> dict[str, Any]:
    """Move each sink kind's section out of ``raw`` into validated connections."""
    from headrace.jobs.registry import SINKS

    services: dict[str, Any] = {}
    for kind in SINKS.values():
        if kind.section is None or kind.connection is None or kind.section == "postgres":
            continue
        if kind.section in raw:
            value = raw.pop(kind.section)
            try:
                services[kind.section] = kind.connection.model_validate(value or {})
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ("profiles", profile, kind.section) + tuple(first["loc"])
                message = str(first["msg"]).removeprefix("Value error, ")
                raise SpecError(f"profile '{profile}': {kind.section}.{'.'.join(map(str, first['loc']))}: {message}",
                                where=smap.where(loc)) from None
    return services


def _interpolate(value: Any, profile: str, smap: SourceMap, path: KeyPath) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, profile, smap, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, profile, smap, path + (i,)) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise SpecError(f"profile '{profile}' needs environment variable {name}",
                                where=smap.where(path), hint=f"export {name}=... before running")
            return os.environ[name]
        return _ENV.sub(sub, value)
    return value


def load_profile(name: str = "local", path: Path | None = None) -> Profile:
    """Load profile ``name`` from ``path`` (default: $HEADRACE_PROFILES or jobs/profiles.yaml)."""
    path = path or Path(os.environ.get("HEADRACE_PROFILES", DEFAULT_PROFILES))
    data, smap = load_yaml(path)
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict):
        raise SpecError("a profiles file holds a 'profiles:' mapping", where=smap.where(()))
    if name not in profiles:
        raise SpecError(f"no profile '{name}'", where=str(path),
                        hint=f"known profiles: {', '.join(sorted(profiles))}")
    raw = _interpolate(profiles[name] or {}, name, smap, ("profiles", name))
    services = _service_sections(raw, name, smap) if isinstance(raw, dict) else {}
    try:
        return Profile.model_validate({"name": name, **raw, "services": services})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ("profiles", name) + tuple(first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SpecError(f"profile '{name}': {'.'.join(map(str, first['loc'])) or 'profile'}: {message}",
                        where=smap.where(loc)) from None
