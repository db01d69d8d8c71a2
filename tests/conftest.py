"""Shared fixtures: one tansu broker and one PostgreSQL for the whole session, unique names per test."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Broker, InfluxServer, Postgres, RedisServer, VictoriaMetrics

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()
#: the mask step's key: set before any test starts the (shared) JVM, which reads it from its own
#: environment, fixed when it starts
os.environ.setdefault("HEADRACE_MASK_KEY", "headrace-test-mask-key-0123456789")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = Broker.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    p = Postgres.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    server = InfluxServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria() -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``headrace registry serve`` on a free port, as a user starts it; its URL."""
    import subprocess
    import sys

    from tests.services import _wait_port, free_port

    port = free_port()
    store = tmp_path_factory.mktemp("registry") / "registry.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port", str(port),
                             "--store", str(store)], cwd=ROOT)
    try:
        _wait_port(port, proc, "headrace registry serve")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def unique() -> str:
    """A name no other test uses (topics, tables, groups)."""
    return f"t{next(_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture()
def profiles_file(tmp_path: Path, broker: Broker, pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profiles file naming the session's broker and database; the password comes from ${ENV}."""
    monkeypatch.setenv("HEADRACE_TEST_PG_PASSWORD", "not-a-real-secret")
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "profiles:\n  test:\n"
        f"    kafka: {{bootstrap_servers: \"{broker.bootstrap}\"}}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres,"
        " password: \"${HEADRACE_TEST_PG_PASSWORD}\"}\n"
        f"    state: {{checkpoints: {tmp_path / 'checkpoints'}, savepoints: {tmp_path / 'savepoints'}}}\n"
        # watermarks every 10 ms (default 200 ms) so that records built to be late meet a watermark
        "    flink: {parallelism.default: \"2\", pipeline.auto-watermark-interval: \"10 ms\"}\n")
    return path


@pytest.fixture(autouse=True)
def _jars_dir() -> None:
    os.environ.setdefault("HEADRACE_JARS_DIR", str(Path.home() / ".cache" / "headrace" / "jars"))
