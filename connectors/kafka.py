"""Kafka: the source table (raw records + topic/partition/offset), dead-letter and late sinks,
and small admin helpers (reachability check, topic creation) built on confluent-kafka.

Delivery: the source's offsets live in Flink's checkpoints (it also commits them to the group
on each checkpoint, for monitoring and for a run started with ``--fresh``); the dead-letter sink
is at-least-once (a replay after a failure may repeat a dead letter, with the same ``id``, never
lose one).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from headrace.connectors import deadletter
from headrace.connectors.source import decoded_source_ddl
from headrace.connectors.sqltext import ident, with_options
from headrace.schemas.errors import ServiceError
from headrace.schemas.kafka import KafkaConnection
from headrace.schemas.kinds import SourceDecoding

#: the source's ``fetch.max.wait.ms`` unless the profile's ``kafka.java`` sets it (see :func:`source_ddl`)
FETCH_MAX_WAIT_MS = 50


def source_ddl(table: str, *, topic: str, bootstrap: str, group: str, decoding: SourceDecoding,
               out_of_orderness_ms: int, idle_timeout_ms: int | None, properties: dict[str, str],
               bounded_offsets: dict[int, int] | None = None, from_earliest: bool = False) -> str:
    """The job's records from a Kafka topic: decoded, with their partition, offset and the largest
    event time of their partition so far, and a watermark per partition (``headrace-source``,
    ``operators/java/.../connectors/RecordSource.java``, reading through Flink's Kafka source).

    A record without an event time (undecodable, or its field missing or not an integer) is a
    dead letter, and gets event time 0 so that it cannot move the watermark: its Kafka timestamp
    may be far ahead of the event times (a replay of last month's data) and would make every
    record late.
    """
    options = {
        "topic": topic,
        "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group,
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "earliest-offset" if from_earliest else "group-offsets",
        # how long the broker may hold a fetch when it has nothing new. Kafka answers as soon as
        # a record arrives; tansu holds every fetch for the whole wait (measured at 2,000 records/s:
        # produced → received p50 407 ms / p99 1,339 ms with Kafka's default 500 ms, 54 / 147 ms
        # with 50 ms), and the record that closes a window waits with it. A caught-up reader
        # pays 20 empty fetches a second for it; a reader with a backlog never waits.
        "properties.fetch.max.wait.ms": str(FETCH_MAX_WAIT_MS),
    }
    if bounded_offsets is not None:
        options["scan.bounded.mode"] = "specific-offsets"
        options["scan.bounded.specific-offsets"] = ";".join(
            f"partition:{p},offset:{o}" for p, o in sorted(bounded_offsets.items()))
    options.update({f"properties.{k}": v for k, v in properties.items()})
    return decoded_source_ddl(table, delegate="kafka", options=options, decoding=decoding,
                              out_of_orderness_ms=out_of_orderness_ms, idle_timeout_ms=idle_timeout_ms)


def dead_letter_ddl(table: str, *, topic: str, bootstrap: str, properties: dict[str, str],
                    metric: str = "dead_lettered") -> str:
    """A Kafka output of dead-letter rows; ``metric`` names its counter (``headrace.<metric>``)."""
    columns = ",\n  ".join(f"{ident(n)} {t}" for n, t in deadletter.COLUMNS)
    options = {
        # Flink's kafka sink, closing quietly after a failure (operators/java/.../SafeSinkFactory.java)
        "connector": "headrace-kafka",
        "headrace.metric": metric,
        "topic": topic,
        "properties.bootstrap.servers": bootstrap,
        # keyed by the record's id (topic/partition/offset): a compacted topic, or a reader,
        # drops the repeats an at-least-once replay may write
        "key.format": "raw",
        "key.fields": "id",
        "value.format": "json",
        "value.fields-include": "ALL",
        "value.json.timestamp-format.standard": "ISO-8601",
        "sink.delivery-guarantee": "at-least-once",
        # dead letters are few and bursty: without lingering, each one was its own produce
        # request (measured: ~10x the broker CPU of the whole source read on the benchmark)
        "properties.linger.ms": "100",
    }
    options.update({f"properties.{k}": v for k, v in properties.items()})
    return f"CREATE TEMPORARY TABLE {ident(table)} (\n  {columns}\n) {with_options(options)}"


#: librdkafka errors that no wait will mend: the credentials or the certificates are wrong
_REFUSED = {"_AUTHENTICATION": ("the broker refused Headrace's credentials",
                                "check kafka.security (username, mechanism, the password's environment variable)"),
            "_SSL": ("the TLS handshake with the broker failed",
                     "check kafka.security.ca (the CA that signed the broker's certificate) and the protocol"),
            "_INVALID_ARG": ("librdkafka refused a setting", "check the profile's kafka section")}


def admin(kconn: KafkaConnection) -> tuple[Any, list[Any]]:
    """A librdkafka admin client for the profile's broker (secrets from the environment), and
    the list its error callback fills (served by ``poll``)."""
    from confluent_kafka.admin import AdminClient

    kconn.check_files()
    errors: list[Any] = []
    config: dict[str, Any] = {**kconn.librdkafka_config(), "log_level": 0, "error_cb": errors.append}
    client = AdminClient(config)
    return client, errors


def check_reachable(kconn: KafkaConnection, timeout_s: float = 8.0) -> dict[str, int]:
    """The broker's topics and their partition counts; a :class:`ServiceError` if it cannot be
    reached in time, at once (within a second) when it refuses the credentials or the TLS handshake."""
    from confluent_kafka import KafkaException

    client, errors = admin(kconn)
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    while True:
        try:
            meta = client.list_topics(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            return {name: len(topic.partitions) for name, topic in meta.topics.items()}
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        client.poll(0)
        for error in errors:
            if error.name() in _REFUSED:
                what, hint = _REFUSED[error.name()]
                detail = error.str().split(": ", 1)[-1]
                raise ServiceError(f"{what} at {kconn.bootstrap_servers}: {detail}", hint=hint)
        if time.monotonic() >= deadline:
            hint = "start the broker or fix 'kafka.bootstrap_servers' in the profile"
            if kconn.security is not None:
                hint += (f" (and check kafka.security.protocol {kconn.security.protocol}: a listener of "
                         "another protocol may not answer at all)")
            raise ServiceError(f"cannot reach the Kafka broker at {kconn.bootstrap_servers}: {reason}", hint=hint)


def ensure_topics(kconn: KafkaConnection, topics: Iterable[str], partitions: int = 1) -> None:
    """Create missing output topics (brokers with auto-creation off would refuse our writes)."""
    from confluent_kafka.admin import NewTopic

    existing = check_reachable(kconn)
    missing = sorted(set(topics) - existing.keys())
    if not missing:
        return
    client, _ = admin(kconn)
    bootstrap = kconn.bootstrap_servers
    futures = client.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                                   for t in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout=15)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ServiceError(f"cannot create topic '{topic}' on {bootstrap}: {exc}",
                                   hint="create it yourself or allow topic creation") from None
