"""The profile's ``kafka:`` section: one ``security:`` block mapped to both clients' keys, passthroughs
checked against the client they feed, and no secret in the profile, the SQL or an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from headrace.jobs.profiles import load_profile
from headrace.schemas.errors import SpecError
from headrace.schemas.kafka import KafkaConnection

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pa55-w0rd!#s3cret"


def profile_file(tmp_path: Path, kafka: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("profiles:\n  svc:\n    kafka:\n      bootstrap_servers: '127.0.0.1:9'\n"
                    + "".join(f"      {line}\n" for line in kafka.strip().splitlines())
                    + "    postgres: {host: 127.0.0.1, database: d, user: u}\n")
    return path


def load(tmp_path: Path, kafka: str) -> KafkaConnection:
    profile = load_profile("svc", profile_file(tmp_path, kafka))
    assert profile.kafka is not None
    return profile.kafka


def refused(tmp_path: Path, kafka: str) -> str:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, kafka)
    return caught.value.one_line() if hasattr(caught.value, "one_line") else str(caught.value)


def test_sasl_scram_maps_to_both_clients_with_the_password_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_KAFKA_PW", SECRET)
    kconn = load(tmp_path, """security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, username: headrace,
           password_env: HR_KAFKA_PW, ca: /etc/ca.pem}
properties: {client.id: hr}""")
    java = kconn.java_properties()
    assert java["security.protocol"] == "SASL_SSL" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                        'username="headrace" password="${env:HR_KAFKA_PW}";')
    assert java["ssl.truststore.type"] == "PEM" and java["ssl.truststore.location"] == "/etc/ca.pem"
    assert java["config.providers"] == "env" and java["client.id"] == "hr"
    assert SECRET not in repr(java)
    rd = kconn.librdkafka_config()
    assert rd["sasl.mechanisms"] == "SCRAM-SHA-512" and rd["sasl.username"] == "headrace"
    assert rd["sasl.password"] == SECRET and rd["ssl.ca.location"] == "/etc/ca.pem"
    assert rd["bootstrap.servers"] == "127.0.0.1:9" and "sasl.jaas.config" not in rd
    assert SECRET not in repr(kconn)


def test_mutual_tls_and_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_KEY_PW", SECRET)
    kconn = load(tmp_path, "security: {protocol: SSL, ca: ca.pem, cert: c.pem, key: c.pem, "
                           "key_password_env: HR_KEY_PW}")
    java = kconn.java_properties()
    assert (java["ssl.keystore.type"], java["ssl.keystore.location"]) == ("PEM", "c.pem")
    assert java["ssl.key.password"] == "${env:HR_KEY_PW}"
    rd = kconn.librdkafka_config()
    assert (rd["ssl.certificate.location"], rd["ssl.key.location"]) == ("c.pem", "c.pem")
    assert rd["ssl.key.password"] == SECRET
    monkeypatch.setenv("HR_KAFKA_PW", SECRET)
    plain = load(tmp_path, "security: {protocol: SASL_PLAINTEXT, mechanism: PLAIN, username: u, "
                           "password_env: HR_KAFKA_PW}")
    jaas = plain.java_properties()["sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")


@pytest.mark.parametrize(("kafka", "line", "message"), [
    ("security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, username: u, password: hunter2}", 5,
     "a password never sits in a profile: name the environment variable that holds it"),
    ("security: {protocol: SASL_SSL, username: u, password_env: P}", 5, "protocol SASL_SSL needs 'mechanism'"),
    ("security: {protocol: SSL, mechanism: PLAIN}", 5, "'mechanism', 'username' and 'password_env' are for SASL"),
    ("security: {protocol: SASL_PLAINTEXT, mechanism: PLAIN, username: u, password_env: P, ca: x.pem}", 5,
     "'ca', 'cert' and 'key' are for TLS"),
    ("security: {protocol: SSL, cert: c.pem, key: k.pem}", 5, "join them (cat client.key client.pem"),
    ("security: {protocol: SASL_SSL, mechanism: GSSAPI, username: u, password_env: P}", 5, "SCRAM-SHA-512"),
    ("librdkafka:\n  statistics.interval.ms: '0'\n  sasl.jaas.config: 'x required;'", 7,
     "librdkafka: 'sasl.jaas.config': Java JAAS configuration is not supported (it is the Java client's: "
     "move it to 'kafka.java')"),
    ("java:\n  sasl.mechanisms: PLAIN", 6,
     "java: 'sasl.mechanisms' is not a setting of Kafka's Java client (it is librdkafka's: move it to "
     "'kafka.librdkafka')"),
    ("java:\n  no.such.key: '1'", 6, "java: 'no.such.key' is not a setting of Kafka's Java client"),
    ("properties:\n  ssl.truststore.location: /x", 6,
     "properties: 'ssl.truststore.location' is not taken by both clients; put it under 'kafka.java'"),
    ("properties:\n  sasl.username: u", 6, "put it under 'kafka.librdkafka' (or use 'kafka.security')"),
    ("java:\n  sasl.jaas.config: 'org.apache.kafka.common.security.plain.PlainLoginModule required "
     "username=\"u\" password=\"hunter2\";'", 6, "'sasl.jaas.config' writes 'password' inline"),
    ("java:\n  ssl.keystore.key: '-----BEGIN PRIVATE KEY-----'", 6, "'ssl.keystore.key' holds a secret"),
    ("librdkafka:\n  sasl.oauthbearer.config: 'clientSecret=abc'", 6, "'sasl.oauthbearer.config' holds a secret"),
    ("java:\n  bootstrap.servers: other:9092", 6, "'bootstrap.servers' is set by Headrace"),
    ("security: {protocol: SSL}\njava:\n  security.protocol: PLAINTEXT", 7, "is set from 'kafka.security'"),
])
def test_wrong_settings_are_one_line_at_their_line(tmp_path: Path, kafka: str, line: int, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, kafka)
    text = str(caught.value)
    assert message in text, text
    assert f"p.yaml:{line}" in (caught.value.where or ""), (caught.value.where, text)
    assert "hunter2" not in text and "abc" not in text and "BEGIN PRIVATE" not in text
    assert "\n" not in text


def test_a_secret_passes_through_only_as_an_environment_reference(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_OAUTH", SECRET)
    jaas = 'org.example.OAuthLoginModule required clientId="hr" clientSecret="${env:HR_OAUTH}";'
    kconn = load(tmp_path, f"java:\n  sasl.jaas.config: '{jaas}'\n"
                           "librdkafka:\n  sasl.oauthbearer.config: '${env:HR_OAUTH}'")
    assert kconn.java_properties()["sasl.jaas.config"] == jaas
    assert kconn.java_properties()["config.providers"] == "env"
    assert kconn.librdkafka_config()["sasl.oauthbearer.config"] == SECRET
    monkeypatch.delenv("HR_OAUTH")
    with pytest.raises(SpecError, match="reads the environment variable HR_OAUTH, which is not set"):
        kconn.librdkafka_config()


def test_a_password_that_jaas_cannot_carry_is_refused_without_showing_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_KAFKA_PW", 'line1\nline"2')
    kconn = load(tmp_path, "security: {protocol: SASL_SSL, mechanism: PLAIN, username: u, password_env: HR_KAFKA_PW}")
    with pytest.raises(SpecError) as caught:
        kconn.librdkafka_config()
    assert "line1" not in str(caught.value) and "HR_KAFKA_PW" in str(caught.value)


def test_explain_sql_holds_the_reference_never_the_password(tmp_path: Path) -> None:
    profiles = profile_file(tmp_path, """security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-256, username: headrace,
           password_env: HR_KAFKA_PW}""")
    env = {**os.environ, "HR_KAFKA_PW": SECRET}
    out = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "explain", str(ROOT / "jobs/page_activity.yaml"),
                          "--sql", "--profile", "svc", "--profiles", str(profiles)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "'properties.sasl.jaas.config' = '******'" in out.stdout
    assert SECRET not in out.stdout + out.stderr


def test_the_compiled_sql_itself_holds_the_reference_never_the_password(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan

    monkeypatch.setenv("HR_KAFKA_PW", SECRET)
    profiles = profile_file(tmp_path, "security: {protocol: SASL_PLAINTEXT, mechanism: SCRAM-SHA-512, username: u, "
                                      "password_env: HR_KAFKA_PW}")
    compiled = compile_job(build_plan(parse_job(ROOT / "jobs/page_activity.yaml")), load_profile("svc", profiles))
    sql = "\n".join(compiled.statements)
    assert sql.count('password="${env:HR_KAFKA_PW}"') == 3  # the source, the dead-letter and the late sink
    assert SECRET not in sql
