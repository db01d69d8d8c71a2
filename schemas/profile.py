"""The profile: where a job's connections come from, as one typed object every layer reads.

Job specs never hold addresses or secrets; a profile does (``jobs/profiles.yaml``, loaded with
``file:line`` errors by ``jobs/profiles.py``). Its framework sections are fields here:
``embedded`` (local files, no servers) or ``kafka``, and ``state``, ``cluster``, ``registry``,
``serve``, ``kubernetes``, ``flink``. Every other section belongs to a kind: the kind declares it as a
:class:`Section` model (``PostgresConnection`` with key ``postgres``, ``MaskSettings`` with key
``mask``), the loader validates it with that model, and the kind reads it back typed::

    connection = profile.section(PostgresConnection)   # a PostgresConnection, or a one-line error

So the framework never names a store or a step, and a new kind brings its own section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from headrace.schemas.errors import SpecError
from headrace.schemas.kafka import KafkaConnection
from headrace.schemas.kubernetes import KubernetesSettings
from headrace.schemas.options import Duration, SpecModel, Text
from headrace.schemas.serving import ServeSettings
from pydantic import Field, SecretStr, ValidationError, model_validator


class Section(SpecModel):
    """A profile section that a kind declares (``StepKind.sections``, ``SinkKind.sections``)."""

    #: the section's key in the profile (``postgres:``)
    key: ClassVar[str]
    #: it names a server, which the embedded profile (no servers) cannot have
    service: ClassVar[bool] = True


S = TypeVar("S", bound=Section)


class EmbeddedConnection(SpecModel):
    """Everything in local files under ``data_dir`` (relative to the working directory)."""

    data_dir: str = ".headrace/local"


class StateStorage(SpecModel):
    """Where jobs keep durable state (service profiles).

    Local paths are relative to the working directory; a cluster names storage every
    TaskManager reaches, e.g. ``s3://bucket/headrace/checkpoints`` (with Flink's S3 plugin).
    Each job checkpoints under ``<checkpoints>/<job name>/``.
    """

    checkpoints: Text = ".headrace/checkpoints"
    savepoints: Text = ".headrace/savepoints"

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


class RegistryConnection(SpecModel):
    """A Confluent-compatible schema registry (Headrace's own ``headrace registry serve``, or any
    other): where binary formats in the Confluent wire format find their writer schemas."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=1024)
    username: Text | None = None
    password: SecretStr | None = None
    #: how often a running job asks for the subject's new versions (an unknown id asks at once)
    refresh: Duration = 300_000

    def runtime(self) -> dict[str, Any]:
        """What the JVM decoders get in their spec: never the password (see ``runner.registry_secret``)."""
        return {"url": self.url, "refresh_ms": self.refresh,
                **({"username": self.username} if self.username else {})}


class ClusterConnection(SpecModel):
    """The Flink session cluster jobs are submitted to (its REST address), and the shape of the
    local one ``headrace cluster up`` starts: TaskManager processes and slots in each."""

    rest: str = Field(default="http://127.0.0.1:8081", pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?$")
    taskmanagers: int = Field(default=1, ge=1, le=32)
    slots: int = Field(default=4, ge=1, le=64)


class Profile(SpecModel):
    """Connections for one environment: ``embedded``, or ``kafka`` and the sections its kinds use."""

    name: str = "local"
    embedded: EmbeddedConnection | None = None
    kafka: KafkaConnection | None = None
    state: StateStorage = StateStorage()
    cluster: ClusterConnection = ClusterConnection()
    registry: RegistryConnection | None = None
    serve: ServeSettings = ServeSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    flink: dict[str, Text] = Field(default_factory=dict)
    #: the kinds' sections, by key, each validated by its kind's model
    sections: dict[str, Section] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Profile:
        if self.embedded is None and self.kafka is None:
            raise ValueError("a profile is either 'embedded: {}' or names 'kafka' (and the stores its jobs use)")
        services = [key for key, section in self.sections.items() if section.service]
        if self.embedded is not None and (self.kafka or services):
            raise ValueError("an embedded profile cannot also name 'kafka' or a store"
                             + (f" ('{services[0]}')" if services else ""))
        return self

    def find(self, model: type[S]) -> S | None:
        """The section ``model`` declares, if the profile has it (or all its keys have defaults)."""
        found = self.sections.get(model.key)
        if found is not None:
            assert isinstance(found, model), f"section '{model.key}' declared by two models"
            return found
        if not model.service:
            try:
                return model()
            except ValidationError:
                return None
        return None

    def section(self, model: type[S]) -> S:
        """The section ``model`` declares, or a one-line error naming the section to add."""
        found = self.find(model)
        if found is None:
            raise SpecError(f"profile '{self.name}' names no '{model.key}' connection, which this job needs",
                            hint=f"add '{model.key}: {{...}}' to the profile (see README, 'Profiles')")
        return found
