r"""Watching a running job through Flink's REST API: state, restarts with their causes, checkpoints.

Used by ``headrace run``'s progress line (the local mini-cluster serves the same API on a private
127.0.0.1 port). Flink caches ``/jobs/<id>`` for a few seconds; the exception history and the
checkpoint statistics carry their own timestamps, which is what the lines below report.

>>> root_cause("org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x.y(Z.java:1)\n"
...            "Caused by: org.postgresql.util.PSQLException: Connection to db:5432 refused. Check it.\n"
...            "Caused by: java.net.ConnectException: Connection refused\n\tat a.b(C.java:2)")
'PSQLException: Connection to db:5432 refused'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from headrace.jobs.cluster import ClusterClient
from headrace.schemas.errors import ServiceError

_CAUSE = re.compile(r"^(?:Caused by: )?([\w.$]+(?:Exception|Error|Throwable)[\w$]*)(?::\s*(.*))?$")


_JDK = ("java.", "javax.", "sun.", "jdk.")


def root_cause(trace: str) -> str:
    """``Class: message`` of the cause that explains a Java stack trace, on one line.

    That is the innermost cause outside the JDK when there is one: ``PSQLException: Connection to
    127.0.0.1:5432 refused`` says more than the ``ConnectException: Connection refused`` inside it.
    """
    causes = [m for m in (_CAUSE.match(line.strip()) for line in trace.splitlines()) if m]
    if not causes:
        first = trace.strip().splitlines()[0] if trace.strip() else "unknown cause"
        return _printable(first)[:300]
    outside = [m for m in causes if not m.group(1).startswith(_JDK)]
    found = (outside or causes)[-1]
    name = found.group(1).rsplit(".", 1)[-1]
    message = _printable((found.group(2) or "").strip().split(". ")[0])
    return f"{name}: {message}"[:300] if message else name


def _printable(text: str) -> str:
    r"""A message as a terminal line: a record's bytes quoted in it are escaped, not printed.

    >>> print(_printable("tab\there, NUL\x00, é"))
    tab\there, NUL\x00, é
    """
    return "".join(c if c.isprintable() and c != "\ufffd" else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@dataclass(frozen=True)
class Restart:
    at: datetime
    cause: str


@dataclass
class JobWatch:
    """What ``headrace run`` watches of one job, through ``client``; ``new_restarts()`` returns each
    failure once, oldest first. Every call answers "nothing" while the REST API does not."""

    client: ClusterClient
    job_id: str
    _seen: set[tuple[int, str]] = field(default_factory=set)

    def new_restarts(self) -> list[Restart]:
        """Failures the job restarted from, each once, oldest first.

        A failure is said once it is known to have been a restart: the job entered RESTARTING
        after it (Flink's job timestamps are exact, where its state is cached for ~3 s), a newer
        failure followed it, or the job is still going 8 s after it (a regional restart leaves the
        job RUNNING). The failure that ends the job (FAILING or FAILED after it) is not a restart:
        it is said as the run's error. Until one of these is known, a failure waits.
        """
        try:
            history = self.client.get(f"/jobs/{self.job_id}/exceptions?maxExceptions=20")
        except ServiceError:
            return []
        entries = [e for e in (history.get("exceptionHistory") or {}).get("entries") or []
                   if (int(e.get("timestamp", 0)), str(e.get("exceptionName", ""))) not in self._seen]
        if not entries:
            return []
        try:
            job = self.client.get(f"/jobs/{self.job_id}")
        except ServiceError:
            return []
        state = str(job.get("state"))
        stamps = {k: int(v) for k, v in (job.get("timestamps") or {}).items() if v}
        history_times = [int(e.get("timestamp", 0))
                         for e in (history.get("exceptionHistory") or {}).get("entries") or []]
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        fresh = []
        for entry in entries:
            at = int(entry.get("timestamp", 0))
            key = (at, str(entry.get("exceptionName", "")))
            newer = any(t > at for t in history_times)
            ended = state in ("FAILING", "FAILED") and max(stamps.get("FAILING", 0), stamps.get("FAILED", 0)) >= at
            if ended and not newer:
                self._seen.add(key)  # the job's end, said as its error
                continue
            restarted = stamps.get("RESTARTING", 0) >= at or newer or (
                state not in ("FAILING", "FAILED", "CANCELLING", "CANCELED") and now_ms - at > 8_000)
            if not restarted:
                continue  # not known yet: asked again on the next call
            self._seen.add(key)
            fresh.append(Restart(at=datetime.fromtimestamp(at / 1000, tz=UTC),
                                 cause=root_cause(str(entry.get("stacktrace") or entry.get("exceptionName")))))
        return sorted(fresh, key=lambda r: r.at)

    def _stamps_and_failures(self) -> tuple[dict[str, int], list[int]] | None:
        """The job's state timestamps and the times of its failures, newest first (None: no answer)."""
        try:
            job = self.client.get(f"/jobs/{self.job_id}")
            history = self.client.get(f"/jobs/{self.job_id}/exceptions?maxExceptions=1")
        except ServiceError:
            return None
        stamps = {k: int(v) for k, v in (job.get("timestamps") or {}).items() if v}
        entries = (history.get("exceptionHistory") or {}).get("entries") or []
        return stamps, [int(e.get("timestamp", 0)) for e in entries]

    def has_restarted(self) -> bool:
        """Whether the job has been RESTARTING since it was submitted (its exact timestamps say;
        a regional failover leaves no such state, but does leave an entry in the exception history)."""
        known = self._stamps_and_failures()
        return known is not None and (bool(known[0].get("RESTARTING")) or bool(known[1]))

    def last_start_ms(self) -> int | None:
        """When the job's tasks last (re)started, as far as Flink says: its RUNNING or RESTARTING
        timestamp or its latest failure (a regional restart leaves only that); None if unknown."""
        known = self._stamps_and_failures()
        if known is None:
            return None
        stamps, failures = known
        return max([stamps.get("RUNNING", 0), stamps.get("RESTARTING", 0), *failures]) or None

    def last_checkpoint(self) -> tuple[int, datetime] | None:
        """Number and completion time of the latest completed checkpoint."""
        try:
            completed = self.client.last_checkpoint(self.job_id)
        except ServiceError:
            return None
        if not completed:
            return None
        return int(completed["id"]), datetime.fromtimestamp(completed["latest_ack_timestamp"] / 1000, tz=UTC)

    def read_offsets(self) -> dict[int, int] | None:
        """Per source partition that has a split in the running job, the offset of the last record
        the source has fetched (-1 before the first); None when the job does not answer, or when
        Flink's metrics do not yet show every subtask's Kafka reader.

        A reader registers ``KafkaSourceReader.commitsSucceeded`` when it is created, and each
        partition's ``currentOffset`` when its split is added. Until the metrics Flink serves (fetched
        from the TaskManagers in the background, a second or more behind) show a reader for every
        subtask of the source, a partition missing from them may simply not have been fetched yet:
        an empty answer then would read as "no split left, read to its end"."""
        try:
            vertices = self.client.get(f"/jobs/{self.job_id}")["vertices"]
            source = next(v for v in vertices if "Source" in v["name"])
            base = f"/jobs/{self.job_id}/vertices/{source['id']}/metrics"
            listed = [m["id"] for m in self.client.get(base)]
            readers = {name.split(".", 1)[0] for name in listed if name.endswith(".KafkaSourceReader.commitsSucceeded")}
            if readers != {str(i) for i in range(int(source["parallelism"]))}:
                return None
            names = [name for name in listed if name.endswith(".currentOffset")]
            if not names:
                return {}
            values = self.client.get(base + "?get=" + ",".join(names))
        except (ServiceError, KeyError, StopIteration, ValueError):
            return None
        offsets: dict[int, int] = {}
        for metric in values:
            match = re.search(r"\.partition\.(\d+)\.currentOffset$", metric["id"])
            if match and metric.get("value") not in (None, ""):
                partition = int(match.group(1))
                offsets[partition] = max(offsets.get(partition, -1), int(float(metric["value"])))
        return offsets
