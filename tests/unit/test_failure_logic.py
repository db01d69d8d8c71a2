"""Logic behind durable runs and bad records, without a JVM: checkpoint discovery, restart
causes, event-time ranges, the late rule and profile settings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.checkpoints import CheckpointStore
from headrace.jobs.monitor import root_cause
from headrace.jobs.profiles import load_profile
from headrace.operators.aggregate import is_late
from headrace.operators.validate import RecordCheck, event_time_problem, render_ms
from headrace.schemas.types import FieldType


def _checkpoint(root: Path, run: str, number: int, age_s: float = 0) -> Path:
    chk = root / "page-activity" / run / f"chk-{number}"
    chk.mkdir(parents=True)
    (chk / "_metadata").write_bytes(b"x")
    when = time.time() - age_s
    os.utime(chk / "_metadata", (when, when))
    return chk


def test_latest_checkpoint_is_the_newest_completed_one_of_any_earlier_run(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "aaaa", 7, age_s=100)
    newest = _checkpoint(tmp_path, "bbbb", 3, age_s=10)
    (tmp_path / "page-activity" / "bbbb" / "chk-4").mkdir()  # in progress: no _metadata
    store = CheckpointStore(tmp_path, "page-activity")
    latest = store.latest()
    assert latest is not None and latest.path == newest and latest.number == 3 and latest.flink_job_id == "bbbb"

    store.keep_only(latest)
    assert sorted(p.name for p in store.directory.iterdir()) == ["bbbb"]
    store.forget()
    assert store.latest() is None and list(store.directory.iterdir()) == []


def test_restart_cause_is_the_innermost_cause_outside_the_jdk_on_one_line() -> None:
    trace = ("org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat a.B(B.java:1)\n"
             "Caused by: java.io.IOException: Writing records to JDBC failed.\n\tat c.D(D.java:2)\n"
             "Caused by: org.postgresql.util.PSQLException: Connection to 127.0.0.1:5432 refused. Check that"
             " the hostname and port are correct\n\tat e.F(F.java:3)\n"
             "Caused by: java.net.ConnectException: Connection refused\n\tat g.H(H.java:4)\n")
    assert root_cause(trace) == "PSQLException: Connection to 127.0.0.1:5432 refused"
    assert root_cause("java.lang.IllegalStateException: boom\n\tat a.B(B.java:1)") == "IllegalStateException: boom"
    assert root_cause("") == "unknown cause"


@pytest.mark.parametrize(("ms", "shown"), [
    (0, "1970-01-01T00:00:00Z (0 ms)"),
    (4_102_444_800_000, "2100-01-01T00:00:00Z (4102444800000 ms)"),
    (2**63 - 1, "+292278994-08-17T07:12:55.807Z (9223372036854775807 ms)"),
    (-(2**63), "-292275055-05-16T16:47:04.192Z (-9223372036854775808 ms)"),
])
def test_absurd_event_times_render_as_java_does(ms: int, shown: str) -> None:
    assert render_ms(ms) == shown


def test_event_time_range() -> None:
    now = 1_767_225_600_000
    assert event_time_problem(now + 86_400_000, 86_400_000, "1d", now) is None
    assert "more than max_future (1d) ahead" in str(event_time_problem(now + 86_400_001, 86_400_000, "1d", now))
    assert "before 0001-01-01" in str(event_time_problem(-62_135_596_800_001, 86_400_000, "1d", now))


def test_python_engine_makes_a_future_event_time_a_dead_letter() -> None:
    schema = {"type": "object", "required": ["ts"], "properties": {"ts": {"type": "integer"}}}
    check = RecordCheck(schema, [("ts", FieldType.INTEGER)], event_time="ts", max_future_ms=60_000,
                        max_future_text="1m")
    path, error, _ = check.check('{"ts": 4102444800000}')
    assert path == "/ts" and error.startswith("event time 2100-01-01T00:00:00Z") and "max_future (1m)" in error
    assert check.check(f'{{"ts": {int(time.time() * 1000)}}}')[1] is None


def test_late_rule_is_flinks_bounded_out_of_orderness_watermark_per_partition() -> None:
    # watermark = largest event time - ooo - 1 ms; late = at or behind watermark - lateness
    assert not is_late(100_000, 100_000, 5_000, 0)
    assert not is_late(95_000, 100_000, 5_000, 0)
    assert is_late(94_999, 100_000, 5_000, 0)
    assert not is_late(64_999 + 1, 100_000, 5_000, 30_000) and is_late(64_999, 100_000, 5_000, 30_000)
    assert not is_late(1_000, 1_000, 0, 0)  # the newest record is never late, even with no slack


def test_profile_names_state_storage_and_cluster(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("profiles:\n  prod:\n    kafka: {bootstrap_servers: 'k:9092'}\n"
                    "    postgres: {database: d, user: u}\n"
                    "    state: {checkpoints: 's3://bucket/ckpt', savepoints: sp}\n"
                    "    cluster: {rest: 'http://flink:8081'}\n")
    profile = load_profile("prod", path)
    assert profile.state.uri(profile.state.checkpoints) == "s3://bucket/ckpt"
    assert profile.state.checkpoints_local is None  # runs cannot list it: they start anew
    assert profile.state.uri(profile.state.savepoints) == (Path.cwd() / "sp").as_uri()
    assert profile.cluster.rest == "http://flink:8081"
    assert load_profile("local").state.checkpoints_local == Path(".headrace/checkpoints")


class _Clock:
    """``time`` for :func:`headrace.jobs.runner.watch`: sleeping moves it on at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > 600:  # a bounded job that is never drained would loop here forever
            raise AssertionError("the job was not drained within 600 s")

    def monotonic(self) -> float:
        return self.now


class _FakeJob:
    """A bounded job's REST answers, one checkpoint a second: its source has fetched every record
    before its stop offsets from the start, and its tasks restart at ``restart_at`` (s) if given;
    after that the offsets Flink shows are the failed attempt's until the new attempt reports."""

    START_MS = 1_800_000_000_000

    def __init__(self, clock: _Clock, restart_at: float | None, done: Any, drain_fails_over: bool = False,
                 offsets: Callable[[float], dict[int, int]] | None = None) -> None:
        from types import SimpleNamespace

        self.clock, self.restart_at, self.done = clock, restart_at, done
        self.offsets = offsets or (lambda now: {0: 99, 1: 49})
        self.job_id = "j"
        self.stops: list[float] = []  # when each drain was asked for
        self.drain_fails_over = drain_fails_over
        self.client = SimpleNamespace(stop=self._stop)

    def _restarted(self) -> bool:
        return self.restart_at is not None and self.clock.now >= self.restart_at

    def _stop(self, job_id: str, savepoints: str, drain: bool) -> None:
        assert drain
        self.stops.append(self.clock.now)
        if self.drain_fails_over:  # the savepoint completes, then a sink fails as the windows fire
            self.drain_fails_over = False
            self.restart_at = self.clock.now + 1
            return
        self.done.set_result(None)  # the drained job ends

    @property
    def stopped_at(self) -> float | None:
        return self.stops[-1] if self.stops else None

    def new_restarts(self) -> list[object]:
        return []

    def has_restarted(self) -> bool:
        return self._restarted()

    def last_start_ms(self) -> int:
        return self.START_MS + int(self.restart_at * 1000 if self._restarted() and self.restart_at else 0)

    def last_checkpoint(self) -> tuple[int, object]:
        from datetime import UTC, datetime

        number = int(self.clock.now)
        return number, datetime.fromtimestamp(self.START_MS / 1000 + number, UTC)

    def read_offsets(self) -> dict[int, int]:
        return self.offsets(self.clock.now)


def _watch(monkeypatch: pytest.MonkeyPatch, restart_at: float | None, drain_fails_over: bool = False,
           offsets: Callable[[float], dict[int, int]] | None = None, restored: bool = False) -> _FakeJob:
    from concurrent.futures import Future
    from types import SimpleNamespace

    from headrace.jobs import runner

    clock = _Clock()
    done: Future[None] = Future()
    job = _FakeJob(clock, restart_at, done, drain_fails_over, offsets)
    monkeypatch.setattr(runner, "time", clock)
    monkeypatch.setattr(runner, "JobWatch", lambda client, job_id: job)
    result = SimpleNamespace(get_job_client=lambda: SimpleNamespace(get_job_execution_result=lambda: done),
                             wait=lambda: None)
    state = SimpleNamespace(uri=lambda path: f"file:///{path}", savepoints="savepoints")
    compiled = SimpleNamespace(profile=SimpleNamespace(state=state))
    summary = SimpleNamespace(rest_url="http://127.0.0.1:1", job_id="j")
    runner.watch(result, compiled, summary, lambda _: None, every_s=1e9, stop_at={0: 100, 1: 50},  # type: ignore[arg-type]
                 restored=restored)
    return job


def test_a_bounded_job_is_drained_20_checkpoints_after_its_source_read_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = _watch(monkeypatch, restart_at=None).stopped_at
    assert stopped is not None and 21 <= stopped <= 24


def test_a_restart_after_the_source_read_everything_waits_for_the_new_attempt_before_draining(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed attempt had fetched every record, but the restored source reads again from its
    checkpoint: drained at once, the job would end before reading them (views short of records).
    Its offsets count once a checkpoint has completed 3 s after the restart, then 2 more."""
    stopped = _watch(monkeypatch, restart_at=10.0).stopped_at
    assert stopped is not None and stopped >= 10 + 3 + 2


def test_a_drain_that_fails_over_is_done_again_once_the_restored_job_has_read_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain's savepoint completed, then the job failed over (a store down as the windows
    fired) and runs again from its checkpoint: it must be drained again, or it never ends."""
    job = _watch(monkeypatch, restart_at=None, drain_fails_over=True)
    assert len(job.stops) == 2, job.stops
    first, second = job.stops
    assert 21 <= first <= 24 and second >= first + 1 + 3 + 2


def test_a_resumed_job_is_drained_only_once_the_offsets_still_show_every_record_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed from a checkpoint: for its first seconds Flink's metrics show no split (fetched before
    the restored splits were added), which reads as "every partition read to its end before the
    checkpoint". Then the splits show, still short of their stop offsets, until 30 s. Drained on
    the first answer, the job ended short of its last records (CI, stop 34: the dead letters of
    the last 9,000 offsets missing); the offsets are asked again before the drain."""
    def offsets(now: float) -> dict[int, int]:
        return {} if now < 6 else {0: 50, 1: 20} if now < 30 else {0: 99, 1: 49}

    stopped = _watch(monkeypatch, restart_at=None, offsets=offsets, restored=True).stopped_at
    assert stopped is not None and 30 <= stopped <= 36, stopped


def test_a_resumed_job_whose_source_has_no_split_left_is_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every partition was read to its stop before the checkpoint: no split, no offsets, ever.
    Drained once a checkpoint has completed 3 s after the start, and the partitions still show no
    split 10 s later."""
    from headrace.jobs.runner import SETTLE_S

    stopped = _watch(monkeypatch, restart_at=None, offsets=lambda now: {}, restored=True).stopped_at
    assert stopped is not None and 3 + SETTLE_S <= stopped <= 3 + SETTLE_S + 3, stopped


def test_a_partition_without_a_split_waits_but_one_read_to_its_stop_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition 1 was read to its end before the checkpoint; partition 0 is read to its stop at 20 s."""
    from headrace.jobs.runner import SETTLE_S

    stopped = _watch(monkeypatch, restart_at=None, offsets=lambda now: {0: 50 if now < 20 else 99},
                     restored=True).stopped_at
    assert stopped is not None and 20 + SETTLE_S <= stopped <= 20 + SETTLE_S + 3, stopped
    stopped = _watch(monkeypatch, restart_at=None, offsets=lambda now: {0: 50 if now < 20 else 99, 1: 49},
                     restored=True).stopped_at
    assert stopped is not None and 22 <= stopped <= 24, stopped


def test_read_offsets_answer_only_once_every_subtask_reader_shows() -> None:
    """Flink fetches metrics from the TaskManagers in the background: until every subtask's Kafka
    reader shows, a missing partition is unknown (None), not "no split" ({})."""
    from headrace.jobs.monitor import JobWatch

    def client(listed: list[str], values: dict[str, str]) -> Any:
        from types import SimpleNamespace

        def get(path: str) -> Any:
            if path == "/jobs/j":
                return {"vertices": [{"id": "v1", "name": "Source: KafkaSource-hr_source -> Calc", "parallelism": 2},
                                     {"id": "v2", "name": "Sink", "parallelism": 1}]}
            assert path.startswith("/jobs/j/vertices/v1/metrics"), path
            if "?get=" not in path:
                return [{"id": name} for name in listed]
            asked = path.split("?get=")[1].split(",")
            return [{"id": name, "value": values[name]} for name in asked]
        return SimpleNamespace(get=get)

    reader = "{}.Source__KafkaSource-hr_source.KafkaSourceReader.commitsSucceeded"
    offset = "{}.Source__KafkaSource-hr_source.KafkaSourceReader.topic.t.partition.{}.currentOffset"
    one = [reader.format(0), offset.format(0, 0), "1.numRecordsOut"]
    assert JobWatch(client(one, {offset.format(0, 0): "41"}), "j").read_offsets() is None
    both = [reader.format(0), reader.format(1), "0.numRecordsOut"]
    assert JobWatch(client(both, {}), "j").read_offsets() == {}
    both += [offset.format(0, 0), offset.format(1, 1)]
    assert JobWatch(client(both, {offset.format(0, 0): "41", offset.format(1, 1): "-1"}), "j").read_offsets() \
        == {0: 41, 1: -1}


def test_after_a_restart_old_offsets_that_last_seconds_do_not_drain_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarted at 10 s, the job reads again from its checkpoint; Flink shows the failed attempt's
    offsets (at the stop) until 18 s, then the new attempt's, short of the stop until 30 s. The
    old offsets must not drain it: they must hold for 10 s, and by then the new ones show."""
    from headrace.jobs.runner import SETTLE_S

    def offsets(now: float) -> dict[int, int]:
        return {0: 99, 1: 49} if now < 18 or now >= 30 else {0: 60, 1: 20}

    stopped = _watch(monkeypatch, restart_at=10.0, offsets=offsets).stopped_at
    assert stopped is not None and 30 + SETTLE_S <= stopped <= 30 + SETTLE_S + 3, stopped
