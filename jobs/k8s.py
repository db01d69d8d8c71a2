"""``headrace k8s render``: the manifests and the image that run a project on Kubernetes with the
Flink Kubernetes Operator (session mode).

Written into ``--out``::

    flink-session.yaml       FlinkDeployment (session mode): the project's flink-conf, RocksDB incremental
                             checkpoints and savepoints on s3://, exponential-delay restarts, Prometheus
    flink-metrics.yaml       a Service over the Flink pods' metrics port, and its ServiceMonitor
    jobs/<job>.yaml          one FlinkSessionJob per job: PythonDriver runs headrace.jobs.entry in the
                             JobManager; upgrades stop with a savepoint and resume from it
    serve.yaml               headrace serve: Deployment, Service, HorizontalPodAutoscaler,
                             PodDisruptionBudget, ServiceMonitor
    network-policies.yaml    JobManager REST from this namespace only; serve from the ingress
                             namespace only; metrics from the monitoring namespace
    grafana-dashboard.yaml   the dashboard of ``headrace dashboard`` in a ConfigMap that Grafana's
                             dashboard sidecar loads (label grafana_dashboard: "1")
    kustomization.yaml       all of the above, for 'kubectl apply -k'
    SECRETS.md               the Secrets the pods read, by name and key (never a value)
    image/                   Dockerfile and its build context: the connector jars, Headrace's
                             functions jar, the project's jobs/, schemas and profiles

Nothing here holds a secret: the profile's ``${VAR}`` references are kept as they are (the
pods resolve them from the Secret ``kubernetes.secret``), and Kafka passwords stay
``password_env`` names.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from headrace.jobs.cluster import config_text, flat_config
from headrace.schemas.errors import SpecError
from headrace.schemas.kubernetes import KubernetesSettings, PodSize
from headrace.schemas.profile import Profile

#: the Flink Kubernetes Operator these resources are written for (its CRDs' fields)
OPERATOR_VERSION = "1.15.0"
API_VERSION = "flink.apache.org/v1beta1"
#: the flink-conf keys that name this machine's processes (addresses, ports, directories, the
#: memory the operator sets from the pod size): Kubernetes decides them for the pods
HOST_ONLY = frozenset({
    "env.log.dir", "env.pid.dir", "jobmanager.bind-host", "jobmanager.rpc.address", "jobmanager.rpc.port",
    "taskmanager.bind-host", "taskmanager.host", "taskmanager.rpc.port", "rest.address", "rest.bind-address",
    "blob.server.port", "metrics.reporter.prom.host", "jobmanager.memory.process.size",
    "taskmanager.memory.process.size"})
#: Flink's own Prometheus reporter (the image's plugins/metrics-prometheus), on every pod address
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
METRICS_PORT = 9249
REST_PORT = 8081
#: what the container's read-only root leaves writable (empty dirs)
WRITABLE = {"tmp": "/tmp", "flink-log": "/opt/flink/log", "home": "/home/headrace"}


def flink_version() -> str:
    import pyflink.version

    return str(pyflink.version.__version__)


def operator_flink_version() -> str:
    major, minor = flink_version().split(".")[:2]
    return f"v{major}_{minor}"


@dataclass(frozen=True)
class JobFile:
    """A job spec to deploy: its name and its path relative to the project."""

    name: str
    relative: Path
    #: the environment variables its steps and sinks read (a mask key): the pods get them from the Secret
    environment: tuple[str, ...] = ()


def _resource_name(job: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", job.lower()).strip("-")[:53]
    return name or "job"


def secret_names(profiles_text: str, profile: Profile) -> list[str]:
    """The environment variables the pods need from the Secret: the profile's ``${VAR}`` and
    Kafka's ``password_env`` / ``key_password_env``."""
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", profiles_text))
    security = profile.kafka.security if profile.kafka else None
    if security is not None:
        names |= {n for n in (security.password_env, security.key_password_env) if n}
    return sorted(names)


def flink_configuration(profile: Profile) -> dict[str, str]:
    """The session cluster's flink-conf: flink-conf/config.yaml as ``headrace cluster up`` renders
    it, without the keys that name this machine's processes, with the pods' own settings."""
    k8s = profile.kubernetes
    state = profile.state
    values = {"CLUSTER_DIR": "/opt/flink", "REST_PORT": str(REST_PORT), "RPC_PORT": "6123",
              "SLOTS": str(profile.cluster.slots), "CHECKPOINTS": state.checkpoints, "SAVEPOINTS": state.savepoints,
              "PYTHON": k8s.python, "PROMETHEUS_PORTS": str(METRICS_PORT)}
    conf = {k: v for k, v in flat_config(config_text(values)).items() if k not in HOST_ONLY}
    conf.update(kubernetes_overrides(profile))
    return conf


def kubernetes_overrides(profile: Profile) -> dict[str, str]:
    """What the pods set beyond (or instead of) the local cluster's flink-conf."""
    k8s = profile.kubernetes
    root = profile.state.checkpoints.rstrip("/").rsplit("/", 1)[0]
    overrides = {
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.port": str(METRICS_PORT),
        # the JobManager's leader and the jobs it runs survive its pod: Kubernetes HA on the store
        "high-availability.type": "kubernetes",
        "high-availability.storageDir": f"{root}/ha",
        # every TaskManager of the profile kept up (active resource manager), CPU limits as asked
        "slotmanager.number-of-slots.min": str(profile.cluster.taskmanagers * profile.cluster.slots),
        "kubernetes.jobmanager.cpu.limit-factor": _factor(k8s.jobmanager),
        "kubernetes.taskmanager.cpu.limit-factor": _factor(k8s.taskmanager),
        # the operator keeps savepoints it took for upgrades, and triggers one on every upgrade
        "kubernetes.operator.savepoint.history.max.count": "5",
        "kubernetes.operator.job.upgrade.last-state-fallback.enabled": "false",
    }
    if k8s.s3_endpoint:
        overrides.update({"s3.endpoint": k8s.s3_endpoint, "s3.path.style.access": "true"})
    return overrides


def _factor(size: PodSize) -> str:
    return f"{PodSize.cores(size.cpu_limit) / PodSize.cores(size.cpu):g}"


def _check(profile: Profile) -> None:
    if profile.embedded is not None or profile.kafka is None:
        raise SpecError(f"profile '{profile.name}' is embedded: Kubernetes runs jobs against services",
                        hint="render a service profile (kafka, the stores its sinks use, state on s3://)")
    for key in ("checkpoints", "savepoints"):
        location = getattr(profile.state, key)
        if not location.startswith(("s3://", "s3a://", "s3p://")):
            raise SpecError(f"profile '{profile.name}': state.{key} is '{location}', which the pods cannot share",
                            hint=f"set state.{key}: s3://BUCKET/headrace/{key} (the image enables Flink's S3 plugin)")
    security = profile.kafka.security
    for path in (security.ca, security.cert) if security else ():
        if path and not path.startswith(profile.kubernetes.tls_dir + "/"):
            raise SpecError(f"profile '{profile.name}': kafka.security names {path}, outside the mounted "
                            f"Secret '{profile.kubernetes.kafka_tls_secret}'",
                            hint=f"keep the TLS files under kubernetes.tls_dir ({profile.kubernetes.tls_dir}/)")


def _labels(k8s: KubernetesSettings, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "headrace", "app.kubernetes.io/part-of": k8s.cluster_name,
            "app.kubernetes.io/component": component}


def container_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security() -> dict[str, Any]:
    # 9999: the flink user of Flink's images, which the Headrace image keeps
    return {"runAsNonRoot": True, "runAsUser": 9999, "runAsGroup": 9999, "fsGroup": 9999,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _env(profile: Profile, names: list[str]) -> list[dict[str, Any]]:
    k8s = profile.kubernetes
    env: list[dict[str, Any]] = [
        {"name": "HEADRACE_PROFILES", "value": f"{k8s.project_dir}/profiles.yaml"},
        {"name": "HEADRACE_JARS_DIR", "value": "/opt/headrace/jars"},
        {"name": "HOME", "value": WRITABLE["home"]}]
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": k8s.secret, "key": name}}} for name in names]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": k8s.s3_secret, "key": key, "optional": True}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    return env


def _volumes(profile: Profile) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": name, "emptyDir": {}} for name in WRITABLE]
    mounts: list[dict[str, Any]] = [{"name": name, "mountPath": path} for name, path in WRITABLE.items()]
    security = profile.kafka.security if profile.kafka else None
    if security is not None and (security.ca or security.cert):
        k8s = profile.kubernetes
        volumes.append({"name": "kafka-tls", "secret": {"secretName": k8s.kafka_tls_secret}})
        mounts.append({"name": "kafka-tls", "mountPath": k8s.tls_dir, "readOnly": True})
    return volumes, mounts


def _resources(size: PodSize) -> dict[str, Any]:
    return {"requests": {"cpu": size.cpu, "memory": size.memory},
            "limits": {"cpu": size.cpu_limit, "memory": size.memory}}


def flink_deployment(profile: Profile, names: list[str]) -> dict[str, Any]:
    """The session cluster, for the Flink Kubernetes Operator."""
    k8s = profile.kubernetes
    volumes, mounts = _volumes(profile)
    main = {"name": "flink-main-container", "securityContext": container_security(),
            "env": _env(profile, names), "volumeMounts": mounts,
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]}
    template = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"labels": _labels(k8s, "flink")},
                "spec": {"securityContext": pod_security(), "automountServiceAccountToken": True,
                         "containers": [main], "volumes": volumes}}
    return {
        "apiVersion": API_VERSION, "kind": "FlinkDeployment",
        "metadata": {"name": k8s.cluster_name, "namespace": k8s.namespace, "labels": _labels(k8s, "flink")},
        "spec": {
            "image": k8s.image, "imagePullPolicy": k8s.image_pull_policy,
            "flinkVersion": operator_flink_version(), "mode": "native", "serviceAccount": k8s.service_account,
            "flinkConfiguration": flink_configuration(profile),
            "podTemplate": template,
            "jobManager": {"replicas": 1, "resource": _flink_resource(k8s.jobmanager)},
            "taskManager": {"resource": _flink_resource(k8s.taskmanager)},
        },
    }


def _flink_resource(size: PodSize) -> dict[str, Any]:
    return {"cpu": PodSize.cores(size.cpu), "memory": size.memory}


def python_jar(profile: Profile) -> str:
    version = flink_version()
    return profile.kubernetes.python_jar or (
        f"https://repo1.maven.org/maven2/org/apache/flink/flink-python/{version}/flink-python-{version}.jar")


def session_job(profile: Profile, job: JobFile, parallelism: int | None) -> dict[str, Any]:
    """One job on the session cluster: flink-python's PythonDriver runs headrace.jobs.entry."""
    k8s = profile.kubernetes
    spec_path = f"{k8s.project_dir}/{job.relative.as_posix()}"
    job_spec: dict[str, Any] = {
        "jarURI": python_jar(profile),
        "entryClass": "org.apache.flink.client.python.PythonDriver",
        "args": ["-pyclientexec", k8s.python, "-pym", "headrace.jobs.entry",
                 "--job", spec_path, "--profile", profile.name, "--profiles", f"{k8s.project_dir}/profiles.yaml"],
        # an upgrade (a changed spec or image) stops the job with a savepoint and resumes from it
        "upgradeMode": "savepoint", "state": "running", "allowNonRestoredState": False}
    if parallelism:
        job_spec["parallelism"] = parallelism
    return {"apiVersion": API_VERSION, "kind": "FlinkSessionJob",
            "metadata": {"name": _resource_name(job.name), "namespace": k8s.namespace,
                         "labels": {**_labels(k8s, "job"), "headrace.dev/job": _resource_name(job.name)}},
            "spec": {"deploymentName": k8s.cluster_name, "job": job_spec}}


def serve_resources(profile: Profile, names: list[str]) -> list[dict[str, Any]]:
    """headrace serve: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, ServiceMonitor."""
    k8s, serve = profile.kubernetes, profile.kubernetes.serve
    name, ns = "headrace-serve", k8s.namespace
    labels = _labels(k8s, "serve")
    http, grpc = profile.serve.port, profile.serve.grpc_port
    grpc = profile.serve.port + 1 if grpc is None else grpc
    volumes, mounts = _volumes(profile)
    ports = [{"name": "http", "containerPort": http, "protocol": "TCP"}]
    if grpc:
        ports.append({"name": "grpc", "containerPort": grpc, "protocol": "TCP"})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": "serve", "image": k8s.image, "imagePullPolicy": k8s.image_pull_policy,
        # bound to the pod's address (the NetworkPolicy, not the bind address, keeps it private)
        "command": ["headrace", "serve", "--project", k8s.project_dir, "--profile", profile.name,
                    "--host", "0.0.0.0", "--port", str(http), "--grpc-port", str(grpc)],
        "ports": ports, "env": [*_env(profile, names), {"name": "HEADRACE_LOG_FORMAT", "value": "json"}],
        "volumeMounts": mounts,
        "resources": _resources(serve), "securityContext": container_security(),
        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"replicas": serve.replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"securityContext": pod_security(), "automountServiceAccountToken": False,
                                       "containers": [container], "volumes": volumes}}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": p["name"], "port": p["containerPort"],
                                                "targetPort": p["name"], "protocol": "TCP"} for p in ports]}}
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": serve.replicas, "maxReplicas": serve.max_replicas,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization", "averageUtilization": serve.cpu_target}}}]}}
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"maxUnavailable": serve.max_unavailable, "selector": {"matchLabels": labels}}}
    monitor = service_monitor(k8s, name, labels, "http")
    return [deployment, service, hpa, pdb, monitor]


def service_monitor(k8s: KubernetesSettings, name: str, labels: dict[str, str], port: str) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": name, "namespace": k8s.namespace, "labels": labels},
            "spec": {"selector": {"matchLabels": labels},
                     "namespaceSelector": {"matchNames": [k8s.namespace]},
                     "endpoints": [{"port": port, "path": "/metrics", "interval": "15s", "scheme": "http"}]}}


def flink_metrics(profile: Profile) -> list[dict[str, Any]]:
    """A headless Service over every Flink pod's metrics port (the operator makes none), and its
    ServiceMonitor."""
    k8s = profile.kubernetes
    labels = _labels(k8s, "flink")
    name = f"{k8s.cluster_name}-metrics"
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": k8s.namespace, "labels": labels},
               "spec": {"clusterIP": "None", "selector": labels,
                        "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                                   "protocol": "TCP"}]}}
    return [service, service_monitor(k8s, name, labels, "metrics")]


def network_policies(profile: Profile) -> list[dict[str, Any]]:
    """Flink: REST and RPC from pods of this namespace only; serve: HTTP and gRPC from the ingress
    controller's namespace only; metrics from the monitoring namespace."""
    k8s = profile.kubernetes
    ns = k8s.namespace

    def namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    def policy(name: str, component: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": ns, "labels": _labels(k8s, component)},
                "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/component": component,
                                                         "app.kubernetes.io/part-of": k8s.cluster_name}},
                         "policyTypes": ["Ingress"], "ingress": rules}}

    metrics = {"from": [namespace(k8s.monitoring_namespace)],
               "ports": [{"protocol": "TCP", "port": METRICS_PORT}]}
    grpc = profile.serve.port + 1 if profile.serve.grpc_port is None else profile.serve.grpc_port
    serve_ports = [{"protocol": "TCP", "port": profile.serve.port}] + (
        [{"protocol": "TCP", "port": grpc}] if grpc else [])
    return [
        # every port of the Flink pods (REST 8081, RPC, blob, data) only from this namespace's pods
        policy(f"{k8s.cluster_name}-in-namespace", "flink", [{"from": [{"podSelector": {}}]}, metrics]),
        policy("headrace-serve-from-ingress", "serve", [
            {"from": [namespace(k8s.ingress_namespace)], "ports": serve_ports},
            {"from": [namespace(k8s.monitoring_namespace)],
             "ports": [{"protocol": "TCP", "port": profile.serve.port}]}]),
    ]


def dashboard_config_map(profile: Profile) -> dict[str, Any]:
    from headrace.jobs.dashboard import dashboard_json

    k8s = profile.kubernetes
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "headrace-dashboard", "namespace": k8s.namespace,
                         "labels": {**_labels(k8s, "dashboard"), "grafana_dashboard": "1"}},
            "data": {"headrace.json": dashboard_json()}}


def dockerfile(profile: Profile) -> str:
    version = flink_version()
    k8s = profile.kubernetes
    venv = k8s.python.rsplit("/bin/", 1)[0]
    return f"""# The Headrace image: Flink {version} (the version PyFlink {version} runs), Python, the Headrace
# wheel with its extras, the connector jars and Headrace's functions jar, and the project.
# Build: the context is this folder (written by 'headrace k8s render'); put the wheel in it first:
#   pip wheel --no-deps -w {{this folder}} {{the Headrace checkout}}
#   docker build -t {k8s.image} .
FROM flink:{version}-java17

USER root
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \\
 && rm -rf /var/lib/apt/lists/*
# Flink's S3 filesystem (the image's own opt/ jar) as a plugin, at build time: the pods' root
# filesystem is read-only, so ENABLE_BUILT_IN_PLUGINS could not copy it at start
RUN mkdir -p /opt/flink/plugins/s3-fs-presto \\
 && cp /opt/flink/opt/flink-s3-fs-presto-{version}.jar /opt/flink/plugins/s3-fs-presto/ \\
 && test -d /opt/flink/plugins/metrics-prometheus

COPY headrace-*.whl /tmp/wheel/
RUN python3 -m venv {venv} \\
 && {venv}/bin/pip install --no-cache-dir "$(ls /tmp/wheel/headrace-*.whl)[serve,redis,influx,avro,enrich-persist]" \\
 && rm -rf /tmp/wheel \\
 && ln -s {venv}/bin/headrace /usr/local/bin/headrace
# the jars 'headrace jars' fetched and verified (connector jars, Headrace's functions jar)
COPY jars/ /opt/headrace/jars/
COPY project/ {k8s.project_dir}/
ENV HEADRACE_JARS_DIR=/opt/headrace/jars HEADRACE_PROFILES={k8s.project_dir}/profiles.yaml
# every jar checked against its pinned SHA-256, and the functions jar built for this Flink
RUN mkdir -p /home/headrace && chown 9999:9999 /home/headrace \\
 && {venv}/bin/python -c "from headrace.connectors.jars import load_lock, required_jars; \\
from headrace.operators import jvm; required_jars({{j.purpose for j in load_lock().jars}}); \\
assert jvm.jar_path().is_file(), jvm.jar_path()"

USER 9999:9999
WORKDIR {k8s.project_dir}
"""


def _dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=120)


def render(profile: Profile, profiles_path: Path, jobs: list[tuple[JobFile, int | None]], project: Path,
           out: Path, jars_dir: Path | None = None) -> list[Path]:
    """Write the manifests and the image's build context; returns the files written."""
    _check(profile)
    profiles_text = profiles_path.read_text(encoding="utf-8")
    names = secret_names(profiles_text, profile)
    # what the jobs' tasks read (a mask key) goes to the Flink pods only, not to serve's
    flink_names = sorted(set(names) | {n for job, _ in jobs for n in job.environment})
    k8s = profile.kubernetes
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    write("flink-session.yaml", _dump([flink_deployment(profile, flink_names)]))
    write("flink-metrics.yaml", _dump(flink_metrics(profile)))
    for job, parallelism in jobs:
        write(f"jobs/{_resource_name(job.name)}.yaml", _dump([session_job(profile, job, parallelism)]))
    write("serve.yaml", _dump(serve_resources(profile, names)))
    write("network-policies.yaml", _dump(network_policies(profile)))
    write("grafana-dashboard.yaml", _dump([dashboard_config_map(profile)]))
    resources = [p.relative_to(out).as_posix() for p in written]
    write("kustomization.yaml", _dump([{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                        "namespace": k8s.namespace, "resources": resources}]))
    write("SECRETS.md", _secrets_text(profile, flink_names))
    write("image/Dockerfile", dockerfile(profile))
    written += _image_context(profiles_text, project, jobs, out / "image", jars_dir)
    return written


def _secrets_text(profile: Profile, names: list[str]) -> str:
    k8s = profile.kubernetes
    lines = [f"# Secrets the pods of namespace '{k8s.namespace}' read (create them before applying)", "",
             f"- `{k8s.secret}`: one key per environment variable the profile '{profile.name}' names, "
             "and per key the jobs' steps read (the mask step's, for Flink's pods only):"]
    lines += [f"  - `{name}`" for name in names] or ["  - (none: the profile names no variable)"]
    lines += [f"- `{k8s.s3_secret}` (optional; without it the pods use their cloud identity): "
              "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`"]
    security = profile.kafka.security if profile.kafka else None
    if security is not None and (security.ca or security.cert):
        files = sorted({Path(p).name for p in (security.ca, security.cert) if p})
        lines.append(f"- `{k8s.kafka_tls_secret}`, mounted at `{k8s.tls_dir}`: " + ", ".join(f"`{f}`" for f in files))
    example = " ".join(f"--from-literal={name}=..." for name in names[:2])
    lines += ["", "For example:", "", "```",
              f"kubectl -n {k8s.namespace} create secret generic {k8s.secret} {example}".rstrip(), "```", ""]
    return "\n".join(lines)


def _image_context(profiles_text: str, project: Path, jobs: list[tuple[JobFile, int | None]], image: Path,
                   jars_dir: Path | None) -> list[Path]:
    """The project files the image holds (job specs, the schemas they name, the profiles file with
    its ``${VAR}`` kept) and the verified jars."""
    from headrace.connectors.jars import cache_dir, load_lock
    from headrace.operators import jvm

    written = []
    target = image / "project"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "profiles.yaml").write_text(profiles_text, encoding="utf-8")
    written.append(target / "profiles.yaml")
    copied: set[Path] = set()
    for folder in ("jobs", "schemas"):
        source = project / folder
        if not source.is_dir():
            continue
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".avsc", ".proto", ".jsonl", ".csv") \
                    and path.resolve() not in copied:
                dest = target / path.relative_to(project)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                copied.add(path.resolve())
                written.append(dest)
    for job, _ in jobs:
        if (project / job.relative).resolve() not in copied:
            raise SpecError(f"job spec {job.relative} is outside the project's jobs/ folder",
                            hint="keep the job specs under jobs/ so the image holds them")
    jars = image / "jars"
    jars.mkdir(exist_ok=True)
    source_dir = jars_dir or cache_dir()
    wanted = [entry.file for entry in load_lock().jars] + [jvm.jar_path().name]
    for name in wanted:
        found = source_dir / name
        if not found.is_file():
            raise SpecError(f"jar {name} is not in {source_dir}",
                            hint="run 'headrace jars' first: the image carries the verified jars")
        shutil.copy2(found, jars / name)
        written.append(jars / name)
    return written
