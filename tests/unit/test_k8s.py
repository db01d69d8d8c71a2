"""``headrace k8s render``: every manifest valid for its kind, the flink-conf the one ``cluster up``
uses, no secret in any file written, pods locked down, refusals in one line.

No Kubernetes API server runs on this machine: core kinds are checked with kubernetes-validate
(the schemas of Kubernetes 1.37, strict), the operator's and Prometheus's resources against the
fields of their CRDs (``k8s_crds.py``). That a rendered FlinkSessionJob runs, and upgrades from a
savepoint, as the operator submits it is shown on a real session cluster in
``tests/integration/test_cluster.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from headrace.jobs import cluster, k8s
from headrace.jobs.cli import main
from headrace.jobs.dashboard import OPERATOR

from tests.unit.k8s_crds import CUSTOM

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = "1.37.0"
SECRETS = {"HEADRACE_PG_PASSWORD": "pg-S3cr3t!value", "HEADRACE_JWT_SECRET": "jwt-V3ry-s3cret-value-1234567890",
           "KAFKA_PASSWORD": "kafka-Pw-xyz-0987"}
PROFILES = """\
profiles:
  prod:
    kafka:
      bootstrap_servers: "kafka-0.kafka:9093"
      security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, username: headrace, password_env: KAFKA_PASSWORD,
                 ca: /etc/headrace/kafka-tls/ca.pem}
    postgres: {host: pg.db, port: 5432, database: headrace, user: headrace, password: "${HEADRACE_PG_PASSWORD}"}
    redis: {host: redis.db, port: 6379}
    state: {checkpoints: "s3://headrace-state/prod/checkpoints", savepoints: "s3://headrace-state/prod/savepoints"}
    cluster: {taskmanagers: 3, slots: 2}
    serve:
      auth: {hs256_secret: "${HEADRACE_JWT_SECRET}"}
    kubernetes:
      namespace: analytics
      image: registry.example.com/headrace:0.1.0
      s3_endpoint: http://minio.storage:9000
      taskmanager: {cpu: "2", memory: 4Gi, cpu_limit: "3"}
      serve: {replicas: 2, max_replicas: 5, cpu: 250m, memory: 512Mi, cpu_limit: "1"}
"""


def _jars(tmp_path: Path) -> Path:
    """A jar cache holding every jar the image copies (their bytes do not matter here)."""
    from headrace.connectors.jars import load_lock
    from headrace.operators import jvm

    jars = tmp_path / "jars"
    jars.mkdir()
    for name in [jar.file for jar in load_lock().jars] + [jvm.jar_path().name]:
        (jars / name).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return jars


@pytest.fixture()
def rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(_jars(tmp_path)))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    out = tmp_path / "out"
    code = main(["k8s", "render", "--profile", "prod", "--profiles", str(profiles), "--project", str(ROOT),
                 "--out", str(out)])
    assert code == 0
    return out


def documents(out: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(out.rglob("*.yaml")):
        if "image" not in path.relative_to(out).parts and path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def of_kind(out: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents(out) if doc["kind"] == kind]


def pod_specs(out: Path) -> list[dict[str, Any]]:
    pods = [d["spec"]["podTemplate"]["spec"] for d in of_kind(out, "FlinkDeployment")]
    return pods + [d["spec"]["template"]["spec"] for d in of_kind(out, "Deployment")]


def test_every_manifest_is_valid_for_its_kind(rendered: Path) -> None:
    kinds = {doc["kind"] for doc in documents(rendered)}
    assert kinds == {"FlinkDeployment", "FlinkSessionJob", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ConfigMap"}
    for doc in documents(rendered):
        if doc["kind"] in CUSTOM:
            jsonschema.validate(doc, CUSTOM[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    # the operator's pod template is a core pod: checked as one
    for deployment in of_kind(rendered, "FlinkDeployment"):
        kubernetes_validate.validate(deployment["spec"]["podTemplate"], KUBERNETES, strict=True)
    # one FlinkSessionJob per job of the project, on the session cluster, upgraded through a savepoint
    jobs = of_kind(rendered, "FlinkSessionJob")
    assert sorted(j["metadata"]["name"] for j in jobs) == ["page-activity", "page-activity-avro",
                                                          "page-activity-proto", "site-activity"]
    for job in jobs:
        spec = job["spec"]
        assert spec["deploymentName"] == "headrace-flink" and spec["job"]["upgradeMode"] == "savepoint"
        assert spec["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
        assert spec["job"]["jarURI"].endswith(f"flink-python-{k8s.flink_version()}.jar")
    kustomization = yaml.safe_load((rendered / "kustomization.yaml").read_text())
    listed = {p for p in kustomization["resources"]}
    assert listed == {p.relative_to(rendered).as_posix() for p in rendered.rglob("*.yaml")
                      if "image" not in p.relative_to(rendered).parts and p.name != "kustomization.yaml"}


def test_a_manifest_with_a_wrong_field_is_caught_by_the_checks(rendered: Path) -> None:
    """The checks can fail: a misspelt field of each family is refused."""
    deployment = of_kind(rendered, "FlinkDeployment")[0]
    deployment["spec"]["taskManager"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(deployment, CUSTOM["FlinkDeployment"])
    serve = of_kind(rendered, "Deployment")[0]
    serve["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(serve, KUBERNETES, strict=True)


def test_the_flink_conf_is_the_one_cluster_up_uses(rendered: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "install_plugins", lambda dirs: None)
    local = cluster.render_config(cluster.ClusterDirs(tmp_path / "cluster"), rest_port=8081, rpc_port=6123,
                                  checkpoints="s3://headrace-state/prod/checkpoints",
                                  savepoints="s3://headrace-state/prod/savepoints", slots=2)
    up = cluster.flat_config(local.read_text())
    conf = of_kind(rendered, "FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    assert all(isinstance(v, str) for v in conf.values())
    # the pods' own: Python in the image, Flink's Prometheus reporter on the pod's address
    replaced = {"python.executable", "python.client.executable", "metrics.reporter.prom.factory.class",
                "metrics.reporter.prom.port"}
    shared = {k: v for k, v in up.items() if k not in k8s.HOST_ONLY and k not in replaced}
    assert {k: conf[k] for k in shared} == shared
    added = set(conf) - set(shared)
    assert added == replaced | {
        "high-availability.type", "high-availability.storageDir", "slotmanager.number-of-slots.min",
        "kubernetes.jobmanager.cpu.limit-factor", "kubernetes.taskmanager.cpu.limit-factor",
        "kubernetes.operator.savepoint.history.max.count",
        "kubernetes.operator.job.upgrade.last-state-fallback.enabled",
        "s3.endpoint", "s3.path.style.access"}
    assert conf["python.executable"] == "/opt/headrace/venv/bin/python"
    assert conf["metrics.reporter.prom.factory.class"] == k8s.PROMETHEUS_FACTORY
    # what the issue asks of it, all from the shared file
    assert conf["state.backend.type"] == "rocksdb" and conf["execution.checkpointing.incremental"] == "true"
    assert conf["execution.checkpointing.dir"] == "s3://headrace-state/prod/checkpoints"
    assert conf["execution.checkpointing.savepoint-dir"] == "s3://headrace-state/prod/savepoints"
    assert conf["restart-strategy.type"] == "exponential-delay"
    assert conf["slotmanager.number-of-slots.min"] == "6" and conf["taskmanager.numberOfTaskSlots"] == "2"
    assert conf["kubernetes.taskmanager.cpu.limit-factor"] == "1.5"


def test_no_secret_value_in_any_rendered_file(rendered: Path) -> None:
    files = [p for p in rendered.rglob("*") if p.is_file() and p.suffix != ".jar"]
    assert any(p.name == "profiles.yaml" for p in files) and any(p.name == "Dockerfile" for p in files)
    for path in files:
        text = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in text, f"{name}'s value in {path}"
    assert not of_kind(rendered, "Secret")
    # every secret is a reference by name: the Secret and its key
    for pod in pod_specs(rendered):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        for name in SECRETS:
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "headrace-secrets", "key": name}
    listed = (rendered / "SECRETS.md").read_text()
    assert all(f"`{name}`" in listed for name in SECRETS)


def test_the_mask_key_of_a_masking_job_reaches_flink_pods_only(rendered: Path) -> None:
    # jobs/site_activity.yaml masks fields: its TaskManagers read the key from the Secret
    flink = [d["spec"]["podTemplate"]["spec"] for d in of_kind(rendered, "FlinkDeployment")]
    serve = [d["spec"]["template"]["spec"] for d in of_kind(rendered, "Deployment")]
    assert flink and serve
    for pod in flink:
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["HEADRACE_MASK_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "headrace-secrets",
                                                                         "key": "HEADRACE_MASK_KEY"}
    for pod in serve:
        assert "HEADRACE_MASK_KEY" not in {e["name"] for e in pod["containers"][0]["env"]}
    assert "`HEADRACE_MASK_KEY`" in (rendered / "SECRETS.md").read_text()


def test_pods_run_locked_down_with_the_profiles_sizes(rendered: Path) -> None:
    pods = pod_specs(rendered)
    assert len(pods) == 2
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/opt/flink/log"}
    serve = of_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert serve["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                  "limits": {"cpu": "1", "memory": "512Mi"}}
    flink = of_kind(rendered, "FlinkDeployment")[0]["spec"]
    assert flink["taskManager"]["resource"] == {"cpu": 2.0, "memory": "4Gi"}
    hpa = of_kind(rendered, "HorizontalPodAutoscaler")[0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert of_kind(rendered, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    # the Kafka CA comes from its Secret, mounted read-only where the profile names it
    mounts = {m["mountPath"]: m for m in serve["volumeMounts"]}
    assert mounts["/etc/headrace/kafka-tls"]["readOnly"] is True


def test_network_policies_keep_flink_in_the_namespace_and_serve_behind_the_ingress(rendered: Path) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(rendered, "NetworkPolicy")}
    flink = policies["headrace-flink-in-namespace"]
    assert flink["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "flink"
    assert flink["ingress"][0] == {"from": [{"podSelector": {}}]}  # any pod of this namespace, no other
    assert flink["ingress"][1]["ports"] == [{"protocol": "TCP", "port": k8s.METRICS_PORT}]
    serve = policies["headrace-serve-from-ingress"]
    assert serve["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert [p["port"] for p in serve["ingress"][0]["ports"]] == [8700, 8701]
    # the pods the policies select are the pods rendered
    labels = of_kind(rendered, "FlinkDeployment")[0]["spec"]["podTemplate"]["metadata"]["labels"]
    assert flink["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_dockerfile_builds_on_the_same_flink(rendered: Path) -> None:
    text = (rendered / "image" / "Dockerfile").read_text()
    version = k8s.flink_version()
    assert f"FROM flink:{version}-java17" in text
    assert f"flink-s3-fs-presto-{version}.jar /opt/flink/plugins/s3-fs-presto/" in text
    assert "COPY headrace-*.whl" in text and "COPY jars/ /opt/headrace/jars/" in text and "USER 9999:9999" in text
    copied = {p.name for p in (rendered / "image" / "jars").iterdir()}
    assert any(n.startswith("headrace-functions-") for n in copied) and "kafka-clients-3.9.1.jar" in copied
    assert (rendered / "image" / "project" / "jobs" / "page_activity.yaml").is_file()
    assert (rendered / "image" / "project" / "schemas" / "click.schema.json").is_file()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("s3://headrace-state/prod/checkpoints", ".headrace/ckpt", "state.checkpoints is '.headrace/ckpt', which the pods"),
    ("namespace: analytics", "namespace: Analytics", "kubernetes.namespace"),
    ("replicas: 2, max_replicas: 5", "replicas: 4, max_replicas: 2", "max_replicas 2 is below replicas 4"),
    ("ca: /etc/headrace/kafka-tls/ca.pem", "ca: /home/me/ca.pem", "outside the mounted Secret 'headrace-kafka-tls'"),
    ('taskmanager: {cpu: "2"', 'taskmanager: {cpu: "4"', "cpu_limit 3 is below the request cpu 4"),
])
def test_a_profile_kubernetes_cannot_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, old: str, new: str,
                                                     message: str) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(_jars(tmp_path)))
    assert old in PROFILES
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES.replace(old, new))
    code = main(["k8s", "render", "--profile", "prod", "--profiles", str(profiles), "--project", str(ROOT),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "profiles.yaml:" in err[0] or "state." in err[0] or "kafka.security" in err[0], err


def test_the_embedded_profile_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["k8s", "render", "--profile", "local", "--project", str(ROOT), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is embedded" in err[0], err


def test_the_dashboard_queries_only_documented_metrics_and_uses_them_all(rendered: Path) -> None:
    from headrace.jobs.dashboard import METRICS, PANELS, metrics_of

    known = {m.name for m in METRICS}
    queried = {name for _, _, targets in PANELS for expr, _ in targets for name in metrics_of(expr)}
    assert queried == known
    readme = (ROOT / "README.md").read_text()
    # each by its full name, or a counter of Headrace's by its name in the README's counters table
    undocumented = [m.name for m in METRICS if m.name not in readme
                    and f"`{m.name.removeprefix(OPERATOR).removeprefix('headrace_')}`" not in readme]
    assert not undocumented, undocumented
    board = yaml.safe_load((rendered / "grafana-dashboard.yaml").read_text())
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = __import__("json").loads(board["data"]["headrace.json"])["panels"]
    assert [p["title"] for p in panels] == [title for title, _, _ in PANELS]
    assert metrics_of("sum by (le) (rate(headrace_serve_request_seconds_bucket{view=\"x\"}[5m]))") == {
        "headrace_serve_request_seconds_bucket"}
