"""Authenticated Kafka against a real broker that demands SASL SCRAM (tansu ``--authentication``).

tansu 0.6 keeps no SCRAM users on its memory or S3 storage (its ``user_scram_credential`` answers
none), so every user is unknown to it: what can be shown here is the refusal. A user with the wrong
credentials gets one line, within seconds, on every path that reaches the broker (a local run and a
submission to a cluster both check the broker before Flink starts), and the password shows nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Broker, Postgres

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple"


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
    path = profiles(tmp_path, sasl_broker, pg, "PLAIN")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "run", "jobs/page_activity.yaml",
                           "--profile", "sasl", "--profiles", str(path)],
                          cwd=ROOT, env={**os.environ, "HR_TEST_KAFKA_PASSWORD": PASSWORD},
                          capture_output=True, text=True, timeout=60)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and time.monotonic() - started < 30, output
    assert "the broker refused Headrace's credentials" in output and "PLAIN" in output, output
    assert PASSWORD not in output


def test_a_password_variable_that_is_not_set_is_one_line(tmp_path: Path, sasl_broker: Broker, pg: Postgres) -> None:
    path = profiles(tmp_path, sasl_broker, pg, "SCRAM-SHA-512")
    env = {k: v for k, v in os.environ.items() if k != "HR_TEST_KAFKA_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "run", "jobs/page_activity.yaml",
                           "--profile", "sasl", "--profiles", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
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
