"""The profile's ``kubernetes:`` section: what ``headrace k8s render`` needs beyond the rest of the
profile (which it reads too: state storage, the cluster's TaskManagers and slots, serve's port).

Secrets are named, never held: every ``${VAR}`` of the profile (and a Kafka ``password_env``) is a
key of the Secret ``secret``, which the pods read as environment variables.
"""

from __future__ import annotations

import re

from headrace.schemas.options import SpecModel
from pydantic import Field, field_validator, model_validator

#: a Kubernetes object name (RFC 1123 label)
NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
CPU = r"^\d+(\.\d+)?m?$"                       # 2, 0.5, 250m
MEMORY = r"^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$"        # 512Mi, 2Gi


class PodSize(SpecModel):
    """Requests and limits of one pod's container (Kubernetes quantities)."""

    cpu: str = Field(default="1", pattern=CPU)
    memory: str = Field(default="2Gi", pattern=MEMORY)
    #: the CPU a pod may burst to (memory's limit is its request: memory is never overcommitted)
    cpu_limit: str = Field(default="2", pattern=CPU)

    @staticmethod
    def cores(quantity: str) -> float:
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)

    @field_validator("cpu_limit")
    @classmethod
    def _limit_not_below(cls, value: str, info) -> str:  # type: ignore[no-untyped-def]
        cpu = info.data.get("cpu")
        if cpu and cls.cores(value) < cls.cores(cpu):
            raise ValueError(f"cpu_limit {value} is below the request cpu {cpu}")
        return value


class ServeDeployment(PodSize):
    """``headrace serve`` pods: replicas between ``replicas`` and ``max_replicas``, scaled on CPU."""

    cpu: str = Field(default="250m", pattern=CPU)
    memory: str = Field(default="512Mi", pattern=MEMORY)
    cpu_limit: str = Field(default="1", pattern=CPU)
    replicas: int = Field(default=2, ge=1, le=100)
    max_replicas: int = Field(default=6, ge=1, le=1000)
    cpu_target: int = Field(default=70, ge=10, le=100)  # per cent of the request
    #: at most this many pods may be down at once for a voluntary disruption (a node drain)
    max_unavailable: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> ServeDeployment:
        if self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas {self.max_replicas} is below replicas {self.replicas}")
        return self


class KubernetesSettings(SpecModel):
    """Where and how the jobs, the Flink session cluster and ``serve`` run on Kubernetes."""

    namespace: str = Field(default="headrace", pattern=NAME)
    #: the image built from the rendered ``image/Dockerfile``
    image: str = "headrace:0.1.0"
    image_pull_policy: str = Field(default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$")
    #: the Flink session cluster's name (its pods are labelled ``app: <name>``)
    cluster_name: str = Field(default="headrace-flink", pattern=NAME)
    #: the service account the operator's Helm chart creates in each namespace it watches
    service_account: str = Field(default="flink", pattern=NAME)
    #: the Secret holding every environment variable the profile names (one key each)
    secret: str = Field(default="headrace-secrets", pattern=NAME)
    #: the Secret with the object store's credentials (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY);
    #: optional: without it the pods use their cloud identity (IRSA, workload identity)
    s3_secret: str = Field(default="headrace-s3", pattern=NAME)
    #: an S3-compatible store other than AWS (MinIO, Ceph): its endpoint, path-style access
    s3_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    #: the Secret with the Kafka TLS files (kafka.security's ca/cert/key), mounted at ``tls_dir``
    kafka_tls_secret: str = Field(default="headrace-kafka-tls", pattern=NAME)
    tls_dir: str = "/etc/headrace/kafka-tls"
    #: the namespaces allowed in: the ingress controller's (to serve), Prometheus's (metrics)
    ingress_namespace: str = Field(default="ingress-nginx", pattern=NAME)
    monitoring_namespace: str = Field(default="monitoring", pattern=NAME)
    #: where the image keeps Python and the project (job specs, profiles, schemas)
    python: str = "/opt/headrace/venv/bin/python"
    project_dir: str = "/opt/headrace/project"
    #: the flink-python jar the operator fetches for each FlinkSessionJob (PythonDriver runs the
    #: Headrace entry point inside the JobManager); default: Maven Central, for this Flink
    python_jar: str | None = None
    jobmanager: PodSize = PodSize(cpu="1", memory="2Gi", cpu_limit="1")
    taskmanager: PodSize = PodSize(cpu="2", memory="4Gi", cpu_limit="2")
    serve: ServeDeployment = ServeDeployment()

    @field_validator("tls_dir", "python", "project_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or re.search(r"\s", value):
            raise ValueError(f"'{value}' must be an absolute path inside the image, without spaces")
        return value.rstrip("/") or "/"
