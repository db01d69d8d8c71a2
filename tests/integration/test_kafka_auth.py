"""Authenticated Kafka: SASL SCRAM logins of both clients (librdkafka for preflight and topics,
Kafka's Java client in Flink's source and sinks).

Against tansu itself with ``--authentication``: tansu 0.6 keeps no SCRAM users on its memory or S3
storage (its ``user_scram_credential`` answers none), so every user is unknown to it and what it
shows is the refusal. A user with the wrong credentials gets one line, within seconds, on every
path that reaches the broker (a local run and a submission to a cluster both check the broker
before Flink starts), and the password shows nowhere.

Against tansu behind a SCRAM front door (``tests/scramfront.py``: the broker side of Kafka's SASL
exchange, with a user list): the right password runs the example job end to end, every view and
output exact; a wrong password and an unknown user are refused in one line. The same front over TLS
(certificates made here): SASL_SSL and mutual-TLS SSL runs exact, a CA that did not sign the
broker's certificate one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.sample import click_events

from tests import kafkautil
from tests.integration.test_failures import PARTITIONS, assert_exact, fault_job, final_offsets
from tests.kafkautil import offsets_arg, produce_placed
from tests.scramfront import ScramFront
from tests.services import Broker, Postgres

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple"


def run_example(path: Path, password: str | None = PASSWORD, profile: str = "sasl", *more: str
                ) -> tuple[str, int, float]:
    """'headrace run' of the example job under ``profile``, the password in the environment (or
    none); its output, exit code and seconds."""
    env = {k: v for k, v in os.environ.items() if k != "HR_TEST_KAFKA_PASSWORD"}
    if password is not None:
        env["HR_TEST_KAFKA_PASSWORD"] = password
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "run", "jobs/page_activity.yaml", *more,
                           "--profile", profile, "--profiles", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip(), done.returncode, time.monotonic() - started


def run_to_the_end(tmp_path: Path, broker: Broker, pg: Postgres, unique: str, profile: str, path: Path,
                   seed: int) -> None:
    """The example job on its own topic: events produced, 'headrace run' to their end under
    ``profile`` (its exit code 0, no password in its output), then every view and output exact."""
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(6_000, seed=seed))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    job = fault_job(tmp_path, unique)
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "run", str(job), "--profile", profile,
                           "--profiles", str(path), "--stop-at-offsets", offsets_arg(final_offsets(events)),
                           "--limit", "1"],
                          cwd=ROOT, env={**os.environ, "HR_TEST_KAFKA_PASSWORD": PASSWORD},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    assert_exact(broker, pg, unique, placed)


@pytest.fixture(scope="module")
def fronted() -> Iterator[tuple[Broker, ScramFront]]:
    """tansu behind the SCRAM front: clients bootstrap at the front, and tansu sends them back to it."""
    import dataclasses

    front = ScramFront({"headrace": PASSWORD})
    tansu = Broker.start(advertised=front.port)
    try:  # the broker is stopped even when the front fails to start
        front.start(tansu.port)
        yield dataclasses.replace(tansu, port=front.port), front
    finally:
        front.stop()
        tansu.stop()


def login(mechanism: str, password: str = PASSWORD, user: str = "headrace") -> dict[str, str]:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password}


def test_the_right_password_runs_the_example_job_exactly(tmp_path: Path, fronted: tuple[Broker, ScramFront],
                                                        pg: Postgres, unique: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    broker, front = fronted
    mechanism = "SCRAM-SHA-512"
    monkeypatch.setattr(kafkautil, "CLIENT_CONF", login(mechanism))  # the test's own producer and readers
    before = len(front.logins)
    run_to_the_end(tmp_path, broker, pg, unique, "sasl", profiles(tmp_path, broker, pg, mechanism), seed=91)
    # every connection of the run logged in (librdkafka's and the Java client's), none was refused
    logins = front.logins[before:]
    print(f"{len(logins)} SCRAM logins during the run")
    assert len(logins) >= 3 and all(outcome == "ok" for _, outcome in logins), logins
    assert {m for m, _ in logins} == {mechanism}


def produce_with(profile: Path, name: str, topic: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    """'headrace produce' of 200 sample events: a login, topic creation and writes (librdkafka)."""
    return subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "produce", topic, "--generate", "200",
                           "--partitions", "2", "--quiet", "--profile", name, "--profiles", str(profile)],
                          cwd=ROOT, env={**os.environ, "HR_TEST_KAFKA_PASSWORD": password},
                          capture_output=True, text=True, timeout=60)


def test_scram_sha_256_logs_in_too(tmp_path: Path, fronted: tuple[Broker, ScramFront], pg: Postgres,
                                  unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, front = fronted
    before = len(front.logins)
    done = produce_with(profiles(tmp_path, broker, pg, "SCRAM-SHA-256"), "sasl", unique)
    assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.setattr(kafkautil, "CLIENT_CONF", login("SCRAM-SHA-256"))
    assert len(kafkautil.read_all(broker.bootstrap, unique, 200, partitions=2)) == 200
    assert front.logins[before:] and set(front.logins[before:]) == {("SCRAM-SHA-256", "ok")}


@pytest.mark.parametrize(("password", "user", "reason"), [("wrong-password", "headrace", "invalid credentials"),
                                                          (PASSWORD, "mallory", "unknown user 'mallory'")])
def test_a_wrong_password_or_an_unknown_user_is_refused_in_one_line(
        tmp_path: Path, fronted: tuple[Broker, ScramFront], pg: Postgres, password: str, user: str,
        reason: str) -> None:
    broker, front = fronted
    path = profiles(tmp_path, broker, pg, "SCRAM-SHA-512")
    path.write_text(path.read_text().replace("username: headrace", f"username: {user}"))
    before = len(front.logins)
    output, code, took = run_example(path, password)
    assert code != 0 and took < 30, output
    assert output.startswith(f"error: the broker refused Headrace's credentials at {broker.bootstrap}: "), output
    assert len(output.splitlines()) <= 2 and password not in output and "Traceback" not in output, output
    assert ("SCRAM-SHA-512", reason) in front.logins[before:]


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[Broker]:
    broker = Broker.start(authentication=True)
    yield broker
    broker.stop()


def profiles(tmp_path: Path, broker: Broker, pg: Postgres, mechanism: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "profiles:\n  sasl:\n"
        f"    kafka:\n      bootstrap_servers: '{broker.bootstrap}'\n"
        f"      security: {{protocol: SASL_PLAINTEXT, mechanism: {mechanism}, username: headrace,"
        " password_env: HR_TEST_KAFKA_PASSWORD}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
        f"    state: {{checkpoints: {tmp_path / 'cp'}, savepoints: {tmp_path / 'sp'}}}\n")
    return path


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
@pytest.mark.parametrize("command", [["run"], ["submit", "--cluster", "http://127.0.0.1:9"]])
def test_refused_credentials_are_one_line_within_seconds(tmp_path: Path, sasl_broker: Broker, pg: Postgres,
                                                         command: list[str], mechanism: str) -> None:
    path = profiles(tmp_path, sasl_broker, pg, mechanism)
    env = {**os.environ, "HR_TEST_KAFKA_PASSWORD": PASSWORD}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", command[0], "jobs/page_activity.yaml",
                           *command[1:], "--profile", "sasl", "--profiles", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert took < 30, f"took {took:.1f}s"
    assert output.startswith(f"error: the broker refused Headrace's credentials at {sasl_broker.bootstrap}: "
                             "SASL authentication error"), output
    assert "unknown-user" in output and "kafka.security" in output
    assert len(output.splitlines()) <= 2, output  # the line and its hint, no trace
    assert PASSWORD not in output and "Traceback" not in output


def test_the_mechanism_the_broker_does_not_offer_is_one_line(tmp_path: Path, sasl_broker: Broker,
                                                             pg: Postgres) -> None:
    output, code, took = run_example(profiles(tmp_path, sasl_broker, pg, "PLAIN"))
    assert code != 0 and took < 30, output
    assert "the broker refused Headrace's credentials" in output and "PLAIN" in output, output
    assert PASSWORD not in output


def test_a_password_variable_that_is_not_set_is_one_line(tmp_path: Path, sasl_broker: Broker, pg: Postgres) -> None:
    output, code, _ = run_example(profiles(tmp_path, sasl_broker, pg, "SCRAM-SHA-512"), None)
    assert code == 2, output
    assert "HR_TEST_KAFKA_PASSWORD is not set" in output and "export HR_TEST_KAFKA_PASSWORD" in output, output


RESOLVE = """
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
public class Resolve {
  public static void main(String[] args) {
    Properties props = new Properties();
    for (int i = 0; i < args.length; i += 2) props.put(args[i], args[i + 1]);
    props.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
    props.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
    System.out.println(new ConsumerConfig(props).getPassword("sasl.jaas.config").value());
  }
}
"""


def test_the_java_client_reads_the_password_from_the_environment(tmp_path: Path, sasl_broker: Broker,
                                                                 pg: Postgres) -> None:
    """What Flink's Kafka source and sinks get: Kafka's own config class, given Headrace's settings,
    resolves ``${env:…}`` to the password of the process it runs in (and only there)."""
    import pyflink
    from headrace.connectors import jars
    from headrace.jobs.profiles import load_profile

    kconn = load_profile("sasl", profiles(tmp_path, sasl_broker, pg, "SCRAM-SHA-512")).kafka
    assert kconn is not None
    source = tmp_path / "Resolve.java"
    source.write_text(RESOLVE)
    classpath = [str(p) for p in jars.required_jars({"kafka"}) if "kafka-clients" in p.name]
    classpath += [str(p) for p in (Path(pyflink.__file__).parent / "lib").glob("*.jar")]  # slf4j, as in Flink
    args = [x for kv in kconn.java_properties().items() for x in kv]
    done = subprocess.run(["java", "-cp", ":".join(classpath), str(source), *args], capture_output=True, text=True,
                          env={**os.environ, "HR_TEST_KAFKA_PASSWORD": PASSWORD}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                   f'username="headrace" password="{PASSWORD}";')


@pytest.fixture(scope="module")
def tls_fronts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """tansu behind two TLS fronts: SASL_SSL (SCRAM over TLS), and SSL with client certificates."""
    import dataclasses

    from tests.scramfront import certificates, server_context

    files = certificates(tmp_path_factory.mktemp("tls"))
    fronts = {"SASL_SSL": ScramFront({"headrace": PASSWORD}, tls=server_context(files, client_certificates=False)),
              "SSL": ScramFront({}, tls=server_context(files, client_certificates=True), sasl=False)}
    brokers: dict[str, Broker] = {}
    try:  # what started is stopped even when a later start fails (a failed setup left two brokers running)
        for protocol, front in fronts.items():
            brokers[protocol] = Broker.start(advertised=front.port)
            front.start(brokers[protocol].port)
        yield {"files": files, "fronts": fronts,
               "brokers": {p: dataclasses.replace(b, port=fronts[p].port) for p, b in brokers.items()}}
    finally:
        for protocol, broker in brokers.items():
            fronts[protocol].stop()
            broker.stop()


def tls_profiles(tmp_path: Path, broker: Broker, pg: Postgres, protocol: str, files: dict[str, Path],
                 ca: str = "ca") -> Path:
    security = f"{{protocol: {protocol}, ca: {files[ca]}" + (
        ", mechanism: SCRAM-SHA-512, username: headrace, password_env: HR_TEST_KAFKA_PASSWORD}"
        if protocol == "SASL_SSL" else f", cert: {files['client']}, key: {files['client']}}}")
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "profiles:\n  tls:\n"
        f"    kafka: {{bootstrap_servers: '{broker.bootstrap}', security: {security}}}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
        f"    state: {{checkpoints: {tmp_path / 'cp'}, savepoints: {tmp_path / 'sp'}}}\n")
    return path


def test_over_mutual_tls_the_example_job_runs_exactly(tmp_path: Path, tls_fronts: dict[str, Any], pg: Postgres,
                                                      unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSL: mutual TLS, the broker's certificate checked against the profile's CA, the client's
    certificate and key from one PEM file (both clients: preflight, Flink's source and sinks)."""
    protocol = "SSL"
    broker, front, files = tls_fronts["brokers"][protocol], tls_fronts["fronts"][protocol], tls_fronts["files"]
    monkeypatch.setattr(kafkautil, "CLIENT_CONF", {
        "security.protocol": protocol, "ssl.ca.location": str(files["ca"]),
        "ssl.certificate.location": str(files["client"]), "ssl.key.location": str(files["client"])})
    before = len(front.logins)
    run_to_the_end(tmp_path, broker, pg, unique, "tls", tls_profiles(tmp_path, broker, pg, protocol, files), seed=92)
    logins = front.logins[before:]
    assert len(logins) >= 3 and all(outcome == "ok" for _, outcome in logins), logins


def test_scram_over_tls_logs_in(tmp_path: Path, tls_fronts: dict[str, Any], pg: Postgres, unique: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL_SSL: SCRAM over TLS, the broker's certificate checked against the profile's CA."""
    broker, front, files = tls_fronts["brokers"]["SASL_SSL"], tls_fronts["fronts"]["SASL_SSL"], tls_fronts["files"]
    before = len(front.logins)
    done = produce_with(tls_profiles(tmp_path, broker, pg, "SASL_SSL", files), "tls", unique)
    assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.setattr(kafkautil, "CLIENT_CONF", {**login("SCRAM-SHA-512"), "security.protocol": "SASL_SSL",
                                                   "ssl.ca.location": str(files["ca"])})
    assert len(kafkautil.read_all(broker.bootstrap, unique, 200, partitions=2)) == 200
    assert front.logins[before:] and set(front.logins[before:]) == {("SCRAM-SHA-512", "ok")}


def test_a_broker_certificate_the_ca_did_not_sign_is_one_line(tmp_path: Path, tls_fronts: dict[str, Any],
                                                             pg: Postgres) -> None:
    broker, files = tls_fronts["brokers"]["SASL_SSL"], tls_fronts["files"]
    output, code, took = run_example(tls_profiles(tmp_path, broker, pg, "SASL_SSL", files, ca="other_ca"),
                                     profile="tls")
    assert code != 0 and took < 30, output
    assert output.startswith("error: ") and len(output.splitlines()) <= 2 and "Traceback" not in output, output
    assert "certificate" in output.lower() and PASSWORD not in output, output
