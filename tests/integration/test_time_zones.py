"""Window bounds do not depend on the machine's time zone: a job run in a zone with daylight
saving, across the change, writes exactly the UTC windows of the reference."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from headrace.jobs.sample import click_events

from tests.integration.clirun import CliRun
from tests.integration.test_failures import PARTITIONS, assert_exact, fault_job, final_offsets, run_args
from tests.kafkautil import produce_placed
from tests.services import Broker, Postgres

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("zone", "start"), [
    ("America/New_York", datetime(2026, 3, 8, 0, 0, tzinfo=UTC)),  # local 02:00-02:59 does not exist
    ("Europe/Berlin", datetime(2026, 3, 28, 22, 0, tzinfo=UTC)),   # local 02:00-02:59 does not exist
])
def test_windows_across_a_daylight_saving_change_are_exact_in_utc(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str,
        zone: str, start: datetime) -> None:
    broker.create_topic(unique, partitions=PARTITIONS)
    # 6 hours around the change, an event every 9 s (invalid and late ones included)
    events = list(click_events(2_400, seed=65, start_ms=int(start.timestamp() * 1000), step_ms=9_000))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(fault_job(tmp_path, unique), profiles_file, final_offsets(events)), env={"TZ": zone})
    assert run.finish() == 0, run.output[-3000:]
    assert_exact(broker, pg, unique, placed)
