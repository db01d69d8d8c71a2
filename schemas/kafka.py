"""How Headrace talks to Kafka: the profile's ``kafka:`` section, mapped to both of its clients.

Two clients read a profile's Kafka settings: librdkafka (``confluent-kafka``: the preflight, topic
creation, ``headrace produce``) and the Java client inside Flink (the source, the dead-letter and
late sinks). Their settings differ (``sasl.mechanisms`` / ``sasl.mechanism``, ``ssl.ca.location`` /
``ssl.truststore.location``, a JAAS line that librdkafka refuses), so the profile says what it
wants once and Headrace writes each client's keys::

    kafka:
      bootstrap_servers: kafka-1:9093
      security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, username: headrace,
                 password_env: KAFKA_PASSWORD, ca: /etc/headrace/kafka-ca.pem}
      properties: {client.id: headrace}          # both clients
      java: {max.poll.records: "2000"}           # Flink's Java client only
      librdkafka: {statistics.interval.ms: "0"}  # the preflight's and the producer's client only

Secrets never sit in the profile or in the job's SQL: the password is named by its environment
variable; the Java client gets ``${env:NAME}`` and resolves it itself (Kafka's
``EnvVarConfigProvider``) in the process that connects, so ``explain --sql``, Flink's operator
names and its logs carry the reference, never the value. Each passthrough key is checked against
the client it is meant for and refused, with the section it belongs in, when it is the other's.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from headrace.schemas.errors import SpecError
from headrace.schemas.options import FilePath, SpecModel, Text
from pydantic import Field, ValidationInfo, field_validator, model_validator

#: every setting the Java client (kafka-clients 3.9.1: consumer, producer, admin) knows, from
#: ``ConsumerConfig/ProducerConfig/AdminClientConfig.configNames()``; ``config.providers.*`` beside
JAVA_KEYS = frozenset({
    "acks", "allow.auto.create.topics", "auto.commit.interval.ms", "auto.include.jmx.reporter", "auto.offset.reset",
    "batch.size", "bootstrap.controllers", "bootstrap.servers", "buffer.memory", "check.crcs", "client.dns.lookup",
    "client.id", "client.rack", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "connections.max.idle.ms", "default.api.timeout.ms", "delivery.timeout.ms",
    "enable.auto.commit", "enable.idempotence", "enable.metrics.push", "exclude.internal.topics", "fetch.max.bytes",
    "fetch.max.wait.ms", "fetch.min.bytes", "group.id", "group.instance.id", "group.protocol",
    "group.remote.assignor", "heartbeat.interval.ms", "interceptor.classes", "internal.leave.group.on.close",
    "internal.throw.on.fetch.stable.offset.unsupported", "isolation.level", "key.deserializer", "key.serializer",
    "linger.ms", "max.block.ms", "max.in.flight.requests.per.connection", "max.partition.fetch.bytes",
    "max.poll.interval.ms", "max.poll.records", "max.request.size", "metadata.max.age.ms", "metadata.max.idle.ms",
    "metadata.recovery.strategy", "metric.reporters", "metrics.num.samples", "metrics.recording.level",
    "metrics.sample.window.ms", "partition.assignment.strategy", "partitioner.adaptive.partitioning.enable",
    "partitioner.availability.timeout.ms", "partitioner.class", "partitioner.ignore.keys", "receive.buffer.bytes",
    "reconnect.backoff.max.ms", "reconnect.backoff.ms", "request.timeout.ms", "retries", "retry.backoff.max.ms",
    "retry.backoff.ms", "sasl.client.callback.handler.class", "sasl.jaas.config", "sasl.kerberos.kinit.cmd",
    "sasl.kerberos.min.time.before.relogin", "sasl.kerberos.service.name", "sasl.kerberos.ticket.renew.jitter",
    "sasl.kerberos.ticket.renew.window.factor", "sasl.login.callback.handler.class", "sasl.login.class",
    "sasl.login.connect.timeout.ms", "sasl.login.read.timeout.ms", "sasl.login.refresh.buffer.seconds",
    "sasl.login.refresh.min.period.seconds", "sasl.login.refresh.window.factor", "sasl.login.refresh.window.jitter",
    "sasl.login.retry.backoff.max.ms", "sasl.login.retry.backoff.ms", "sasl.mechanism",
    "sasl.oauthbearer.clock.skew.seconds", "sasl.oauthbearer.expected.audience", "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.header.urlencode", "sasl.oauthbearer.jwks.endpoint.refresh.ms",
    "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms", "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms",
    "sasl.oauthbearer.jwks.endpoint.url", "sasl.oauthbearer.scope.claim.name", "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.token.endpoint.url", "security.protocol", "security.providers", "send.buffer.bytes",
    "session.timeout.ms", "socket.connection.setup.timeout.max.ms", "socket.connection.setup.timeout.ms",
    "ssl.cipher.suites", "ssl.enabled.protocols", "ssl.endpoint.identification.algorithm",
    "ssl.engine.factory.class", "ssl.key.password", "ssl.keymanager.algorithm", "ssl.keystore.certificate.chain",
    "ssl.keystore.key", "ssl.keystore.location", "ssl.keystore.password", "ssl.keystore.type", "ssl.protocol",
    "ssl.provider", "ssl.secure.random.implementation", "ssl.trustmanager.algorithm", "ssl.truststore.certificates",
    "ssl.truststore.location", "ssl.truststore.password", "ssl.truststore.type", "transaction.timeout.ms",
    "transactional.id", "value.deserializer", "value.serializer",})
#: set by Headrace from the profile and the job; a passthrough cannot change them
OWNED_KEYS = frozenset({"bootstrap.servers", "group.id", "config.providers"})
#: set from ``security:`` when the profile has it
SECURITY_KEYS = frozenset({
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.jaas.config", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password", "ssl.truststore.type",
    "ssl.truststore.location", "ssl.keystore.type", "ssl.keystore.location"})
_SECRET_KEY = re.compile(r"password|secret|jaas|oauthbearer\.config|(^|\.)key(\.pem)?$|keystore\.key|token")
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_JAAS_SECRET = re.compile(r"(\w*(?:password|secret|token)\w*)\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
ENV_PROVIDER = {"config.providers": "env",
                "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider"}
_JAAS_MODULE = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def librdkafka_refuses(key: str, value: str) -> str | None:
    """librdkafka's own answer to one setting (``None``: it takes it), without connecting."""
    from confluent_kafka import KafkaException, Producer

    try:
        Producer({key: value, "log_level": 0, "logger": _quiet})
    except (KafkaException, ValueError, TypeError) as exc:
        error = exc.args[0] if exc.args else exc
        return error.str() if hasattr(error, "str") else str(error)
    return None


class _Quiet:
    def log(self, *_args: object, **_kwargs: object) -> None:
        pass


_quiet = _Quiet()


def _check_secret(key: str, value: str) -> None:
    """A secret passes through only as ``${env:NAME}``: never its value in the profile."""
    if not _SECRET_KEY.search(key):
        return
    if key == "sasl.jaas.config":
        inline = [name for name, val in _JAAS_SECRET.findall(value) if not _ENV_REF.fullmatch(val)]
        if inline:
            raise ValueError(f"'{key}' writes '{inline[0]}' inline; write {inline[0]}=\"${{env:NAME}}\" "
                             "and export NAME where the job runs (a secret never sits in a profile)")
    elif not _ENV_REF.fullmatch(value):
        raise ValueError(f"'{key}' holds a secret; write '${{env:NAME}}' and export NAME where the "
                         "job runs (a secret never sits in a profile)")


def _check_common(key: str, secured: bool) -> None:
    if key in OWNED_KEYS or key.startswith("config.providers."):
        raise ValueError(f"'{key}' is set by Headrace (from the profile and the job); remove it")
    if secured and key in SECURITY_KEYS:
        raise ValueError(f"'{key}' is set from 'kafka.security'; remove it here")


def check_setting(section: str, key: str, value: str, secured: bool) -> None:
    """One passthrough setting: taken by the client(s) its section feeds, and no secret inline."""
    _check_common(key, secured)
    probe = _ENV_REF.sub("x", value)
    if section == "java":
        if key not in JAVA_KEYS:
            rdkafka = librdkafka_refuses(key, probe) is None
            hint = " (it is librdkafka's: move it to 'kafka.librdkafka')" if rdkafka else ""
            raise ValueError(f"'{key}' is not a setting of Kafka's Java client{hint}")
    elif section == "librdkafka":
        refused = librdkafka_refuses(key, probe)
        if refused is not None:
            hint = " (it is the Java client's: move it to 'kafka.java')" if key in JAVA_KEYS else ""
            raise ValueError(f"'{key}': {refused.split(', see ')[0].split('. See ')[0]}{hint}")
    else:
        java_only = librdkafka_refuses(key, probe) is not None
        if java_only or key not in JAVA_KEYS:
            where = "kafka.java" if java_only and key in JAVA_KEYS else "kafka.librdkafka"
            raise ValueError(f"'{key}' is not taken by both clients; put it under '{where}'"
                             + (" (or use 'kafka.security')" if key in SECURITY_KEYS else ""))
    _check_secret(key, value)
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"'{key}': a value is one line of text, without control characters")
    if NUMERIC_KEY.search(key) and not _ENV_REF.search(value) and not re.fullmatch(r"-?\d+", value.strip()):
        raise ValueError(f"'{key}' is a whole number, not '{value[:40]}'")


#: settings both clients read as whole numbers (linger.ms, batch.size, retries, …)
NUMERIC_KEY = re.compile(r"(\.ms|\.bytes|\.size|\.records|^retries)$")


class KafkaSecurity(SpecModel):
    """How the clients authenticate and encrypt: one block, mapped to both clients' keys."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = None
    username: Text | None = None
    #: the environment variable that holds the password (never the password itself)
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    #: PEM file of the CA that signed the brokers' certificates (default: the system's)
    ca: FilePath | None = None
    #: client certificate (mutual TLS): PEM files; Java reads key and chain from one file, so
    #: ``cert`` and ``key`` name the same file holding both
    cert: FilePath | None = None
    key: FilePath | None = None
    key_password_env: str | None = Field(default=None, pattern=ENV_NAME)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: object) -> object:
        if isinstance(data, dict) and ("password" in data or "key_password" in data):
            raise ValueError("a password never sits in a profile: name the environment variable that holds it, "
                             "'password_env: KAFKA_PASSWORD' (or 'key_password_env')")
        return data

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        sasl = self.protocol.startswith("SASL_")
        if sasl and not (self.mechanism and self.username and self.password_env):
            raise ValueError(f"protocol {self.protocol} needs 'mechanism' (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN), "
                             "'username' and 'password_env'")
        if not sasl and (self.mechanism or self.username or self.password_env):
            raise ValueError(f"'mechanism', 'username' and 'password_env' are for SASL; protocol {self.protocol} "
                             "has none (use SASL_SSL or SASL_PLAINTEXT)")
        tls = self.protocol.endswith("SSL")
        if not tls and (self.ca or self.cert or self.key):
            raise ValueError(f"'ca', 'cert' and 'key' are for TLS; protocol {self.protocol} has none "
                             "(use SSL or SASL_SSL)")
        if bool(self.cert) != bool(self.key):
            raise ValueError("'cert' and 'key' go together (a client certificate and its private key)")
        if self.cert and self.cert != self.key:
            raise ValueError("Java's Kafka client reads the private key and its certificate chain from one PEM file: "
                             "join them (cat client.key client.pem > client-bundle.pem) and name it as both "
                             "'cert' and 'key'")
        if self.key_password_env and not self.key:
            raise ValueError("'key_password_env' is for an encrypted 'key'")
        return self

    def _password(self, env: str) -> str:
        value = os.environ.get(env)
        if value is None:
            raise SpecError(f"the Kafka password's environment variable {env} is not set",
                            hint=f"export {env} before running (the profile's kafka.security.password_env)")
        if '"' in value or "\\" in value or "\n" in value:
            raise SpecError(f"the Kafka password in {env} holds a quote, backslash or line break, which Java's "
                            "JAAS line cannot carry", hint="use a password without them")
        return value

    def java(self) -> dict[str, str]:
        """The Java client's keys; secrets as ``${env:NAME}`` references."""
        props: dict[str, str] = {"security.protocol": self.protocol}
        if self.mechanism and self.username and self.password_env:
            props["sasl.mechanism"] = self.mechanism
            props["sasl.jaas.config"] = (f'{_JAAS_MODULE[self.mechanism]} required username="{self.username}" '
                                         f'password="${{env:{self.password_env}}}";')
        if self.ca:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": self.ca})
        if self.key:
            props.update({"ssl.keystore.type": "PEM", "ssl.keystore.location": self.key})
            if self.key_password_env:
                props["ssl.key.password"] = f"${{env:{self.key_password_env}}}"
        return props

    def librdkafka(self) -> dict[str, str]:
        """librdkafka's keys, with the secrets read from the environment (in this process only)."""
        conf: dict[str, str] = {"security.protocol": self.protocol}
        if self.mechanism and self.username and self.password_env:
            conf.update({"sasl.mechanisms": self.mechanism, "sasl.username": self.username,
                         "sasl.password": self._password(self.password_env)})
        if self.ca:
            conf["ssl.ca.location"] = self.ca
        if self.key:
            conf.update({"ssl.certificate.location": self.key, "ssl.key.location": self.key})
            if self.key_password_env:
                conf["ssl.key.password"] = self._password(self.key_password_env)
        return conf

    def files(self) -> list[tuple[str, str]]:
        return [(name, path) for name, path in (("ca", self.ca), ("cert", self.cert)) if path]


class TenantSpread(SpecModel):
    """How ``headrace produce`` keys records: by tenant, a heavy tenant spread over K partitions."""

    key_field: str = "tenant_id"
    #: tenant → the number of partitions its records are spread over (by ``sub_key``)
    heavy: dict[str, Annotated[int, Field(ge=2, le=1024)]] = Field(default_factory=dict)
    sub_key: str = "user_id"


#: host:port, comma-separated (an IPv6 address in brackets)
BOOTSTRAP = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}(,\s*(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5})*$"


class KafkaConnection(SpecModel):
    """The broker and how both clients reach it (see the module's doc)."""

    bootstrap_servers: str = Field(pattern=BOOTSTRAP, max_length=4096)
    security: KafkaSecurity | None = None
    tenants: TenantSpread | None = None
    #: settings both clients take under the same name
    properties: dict[str, str] = Field(default_factory=dict)
    #: settings for Flink's Java client only
    java: dict[str, str] = Field(default_factory=dict)
    #: settings for librdkafka only (preflight, topic creation, ``headrace produce``)
    librdkafka: dict[str, str] = Field(default_factory=dict)

    @field_validator("java", "librdkafka", "properties")
    @classmethod
    def _check_keys(cls, settings: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        secured = info.data.get("security") is not None
        for key, value in settings.items():
            check_setting(str(info.field_name), key, value, secured)
        return settings

    def java_properties(self) -> dict[str, str]:
        """Every Java client setting (without ``bootstrap.servers``), for the Flink tables."""
        props = {**self.properties, **(self.security.java() if self.security else {}), **self.java}
        if any(_ENV_REF.search(v) for v in props.values()):
            props.update(ENV_PROVIDER)
        return props

    def librdkafka_config(self) -> dict[str, str]:
        """Every librdkafka setting, ``bootstrap.servers`` included, secrets resolved here."""
        conf = {"bootstrap.servers": self.bootstrap_servers, **self.properties,
                **(self.security.librdkafka() if self.security else {}), **self.librdkafka}
        for key, value in list(conf.items()):
            for name in _ENV_REF.findall(value):
                if name not in os.environ:
                    raise SpecError(f"kafka.{key} reads the environment variable {name}, which is not set",
                                    hint=f"export {name} before running")
            conf[key] = _ENV_REF.sub(lambda m: os.environ[m.group(1)], value)
        return conf

    def check_files(self) -> None:
        """The TLS files exist (a one-line error before any client fails on them)."""
        for name, path in self.security.files() if self.security else []:
            if not os.path.isfile(path):
                raise SpecError(f"kafka.security.{name}: {path} does not exist",
                                hint="give the path of a PEM file readable where the job runs")

    def env_names(self) -> list[str]:
        """The environment variables the Java client resolves (to check and to document)."""
        return sorted({n for v in self.java_properties().values() for n in _ENV_REF.findall(v)})
