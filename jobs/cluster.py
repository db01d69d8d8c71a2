"""A standalone Flink session cluster, and the jobs on it.

``headrace cluster up`` renders ``flink-conf/config.yaml`` into ``.headrace/cluster/conf`` (ports,
state directories and this Python filled in) and starts a JobManager and a TaskManager with
the scripts of the Flink distribution inside the PyFlink install; ``down`` stops them by the
PIDs Flink's scripts record; ``status`` asks the REST API. Jobs are then submitted to the
cluster (``headrace submit``) and managed through :class:`ClusterClient`: list, savepoint,
stop, cancel.

>>> ClusterClient("http://127.0.0.1:8081").rest_url
'http://127.0.0.1:8081'
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.schemas.errors import ServiceError

Say = Callable[[str], None]
#: flink-conf/config.yaml, shipped as package data
TEMPLATE = importlib.resources.files("headrace.flink_conf").joinpath("config.yaml")


#: the settings of flink-conf/config.yaml that every job carries, on a cluster or a local
#: mini-cluster alike: restarts, the state backend, checkpoint retention
JOB_SETTINGS = ("restart-strategy.", "state.backend.", "execution.checkpointing.")


def flat_config(text: str) -> dict[str, str]:
    """A Flink ``config.yaml`` as Flink reads it: dotted keys, values as strings."""
    import yaml

    def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            name = f"{prefix}{key}"
            out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
        return out

    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in flat(yaml.safe_load(text)).items()}


def config_text(values: dict[str, str]) -> str:
    """flink-conf/config.yaml with its ``${...}`` placeholders filled from ``values``."""
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def job_defaults() -> dict[str, str]:
    """Those settings (placeholders, and the checkpoint interval a job spec sets, left out)."""
    settings = {}
    text = re.sub(r"\$\{[A-Z_]+\}", "PLACEHOLDER", TEMPLATE.read_text(encoding="utf-8"))
    for key, value in flat_config(text).items():
        wanted = key.startswith(JOB_SETTINGS) and key != "execution.checkpointing.interval"
        if wanted and "PLACEHOLDER" not in value:
            settings[key] = value
    return settings


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterDirs:
    """Where a local cluster keeps its configuration, logs and PID files."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    def env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {**os.environ, "FLINK_CONF_DIR": str(self.conf), "FLINK_LOG_DIR": str(self.log),
                "FLINK_PID_DIR": str(self.pid), "FLINK_PLUGINS_DIR": str(self.plugins),
                "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}

    def taskmanager_pids(self) -> list[int]:
        pids = []
        for pid_file in self.pid.glob("*taskexecutor.pid"):
            pids += [int(line) for line in pid_file.read_text().split() if line.strip().isdigit()]
        return pids


def install_plugins(dirs: ClusterDirs) -> None:
    """Flink's plugins, plus ``headrace-prometheus``: Flink's Prometheus jar with Headrace's
    loopback reporter (one plugin class loader holds both)."""
    from headrace.operators import jvm

    if dirs.plugins.exists():
        shutil.rmtree(dirs.plugins)
    dirs.plugins.mkdir(parents=True)
    for plugin in (flink_home() / "plugins").iterdir():
        if plugin.is_dir():
            (dirs.plugins / plugin.name).symlink_to(plugin, target_is_directory=True)
    ours = dirs.plugins / "headrace-prometheus"
    ours.mkdir()
    for jar in (jvm.prometheus_plugin_jar(), jvm.build()):
        (ours / jar.name).symlink_to(jar)


def render_config(dirs: ClusterDirs, *, rest_port: int, rpc_port: int, checkpoints: str, savepoints: str,
                  prometheus_port: int = 9249, slots: int = 4) -> Path:
    values = {"CLUSTER_DIR": str(dirs.root.resolve()), "REST_PORT": str(rest_port), "RPC_PORT": str(rpc_port),
              "SLOTS": str(slots),
              "CHECKPOINTS": checkpoints, "SAVEPOINTS": savepoints, "PYTHON": sys.executable,
              "PROMETHEUS_PORTS": f"{prometheus_port}-{prometheus_port + 9}"}
    text = config_text(values)
    for d in (dirs.conf, dirs.log, dirs.pid):
        d.mkdir(parents=True, exist_ok=True)
    (dirs.conf / "config.yaml").write_text(text, encoding="utf-8")
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        shutil.copy(flink_home() / "conf" / name, dirs.conf / name)
    (dirs.conf / "workers").write_text("127.0.0.1\n")
    (dirs.conf / "masters").write_text(f"127.0.0.1:{rest_port}\n")
    install_plugins(dirs)
    return dirs.conf / "config.yaml"


def _script(name: str) -> str:
    return str(flink_home() / "bin" / name)


def up(dirs: ClusterDirs, *, rest_port: int, rpc_port: int, checkpoints: str, savepoints: str,
       prometheus_port: int = 9249, say: Say = print, timeout_s: float = 90, taskmanagers: int = 1,
       slots: int = 4) -> ClusterClient:
    """Start a JobManager and ``taskmanagers`` TaskManager processes of ``slots`` slots each
    (daemons); returns once every TaskManager registered.

    Each serves Prometheus metrics on 127.0.0.1 at the first free port from ``prometheus_port``
    (the JobManager usually ``prometheus_port``, the TaskManagers the next ones).
    """
    client = ClusterClient(f"http://127.0.0.1:{rest_port}")
    if client.reachable():
        raise ServiceError(f"something already answers on 127.0.0.1:{rest_port}",
                           hint="run 'headrace cluster status', or pick another --port")
    render_config(dirs, rest_port=rest_port, rpc_port=rpc_port, checkpoints=checkpoints, savepoints=savepoints,
                  prometheus_port=prometheus_port, slots=slots)
    env = dirs.env()
    for script in ("jobmanager.sh", *["taskmanager.sh"] * taskmanagers):
        done = subprocess.run(["bash", _script(script), "start"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"could not start the Flink {script.removesuffix('.sh')}: "
                               f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}",
                               hint=f"see the logs in {dirs.log}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        overview = client.overview()
        if overview and overview.get("taskmanagers", 0) >= taskmanagers:
            say(f"cluster up: {client.rest_url} (web UI), {overview['taskmanagers']} TaskManager(s), "
                f"{overview['slots-total']} slots, Prometheus metrics on "
                f"127.0.0.1:{prometheus_port}-{prometheus_port + 9}; logs in {dirs.log}")
            return client
        time.sleep(0.5)
    raise ServiceError(f"the cluster did not come up within {timeout_s:.0f}s", hint=f"see the logs in {dirs.log}")


def add_taskmanager(dirs: ClusterDirs) -> None:
    subprocess.run(["bash", _script("taskmanager.sh"), "start"], env=dirs.env(), check=True, capture_output=True)


def down(dirs: ClusterDirs, say: Say = print) -> None:
    """Stop every TaskManager and the JobManager this directory started (by their PID files)."""
    env = dirs.env()
    for script in ("taskmanager.sh", "jobmanager.sh"):
        subprocess.run(["bash", _script(script), "stop-all"], env=env, capture_output=True, text=True)
    say("cluster down")


class ClusterClient:
    """Flink's REST API, with one-line errors."""

    def __init__(self, rest_url: str, timeout_s: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.rest_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                errors = json.loads(detail).get("errors") or [detail]
            except ValueError:
                errors = [detail]
            first = str(errors[0]).strip().splitlines()[0] if errors else str(exc)
            raise ServiceError(f"the cluster at {self.rest_url} refused {path}: {first[:300]}") from None
        except OSError as exc:
            raise ServiceError(f"cannot reach the Flink cluster at {self.rest_url}: {exc}",
                               hint="start it with 'headrace cluster up', or fix 'cluster.rest' in the profile"
                               ) from None

    def get(self, path: str) -> Any:
        return self._request(path)

    def reachable(self) -> bool:
        try:
            self.get("/overview")
            return True
        except ServiceError:
            return False

    def overview(self) -> dict[str, Any] | None:
        try:
            return dict(self.get("/overview"))
        except ServiceError:
            return None

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.get("/jobs/overview")["jobs"])

    def find(self, job: str) -> str:
        """A job id from an id or a job name (the newest running job of that name)."""
        if re.fullmatch(r"[0-9a-f]{32}", job):
            return job
        running = [j for j in self.jobs() if j["name"] == job and j["state"] in ("RUNNING", "RESTARTING", "CREATED")]
        if not running:
            raise ServiceError(f"no running job named '{job}' on {self.rest_url}", hint="see 'headrace jobs'")
        return str(max(running, key=lambda j: j["start-time"])["jid"])

    def _await_savepoint(self, job_id: str, trigger: dict[str, Any], timeout_s: float = 120) -> str:
        request_id = trigger["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}/savepoints/{request_id}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation") or {}
                if "failure-cause" in operation:
                    cause = operation["failure-cause"]
                    from headrace.jobs.monitor import root_cause

                    raise ServiceError(f"the savepoint of job {job_id} failed: "
                                       f"{root_cause(str(cause.get('stack-trace') or cause))}")
                return str(operation["location"])
            time.sleep(0.3)
        raise ServiceError(f"the savepoint of job {job_id} did not complete within {timeout_s:.0f}s")

    def savepoint(self, job_id: str, directory: str) -> str:
        trigger = self._request(f"/jobs/{job_id}/savepoints", {"target-directory": directory, "cancel-job": False})
        return self._await_savepoint(job_id, trigger)

    def stop(self, job_id: str, directory: str, *, drain: bool = False) -> str:
        """Stop with a savepoint (``drain``: fire every window first, as a bounded job ends)."""
        trigger = self._request(f"/jobs/{job_id}/stop", {"targetDirectory": directory, "drain": drain})
        return self._await_savepoint(job_id, trigger)

    def await_restored(self, job_id: str, source: str, timeout_s: float = 60) -> None:
        """Wait until a job submitted from a savepoint or checkpoint runs (its tasks deployed, so
        its state was restored); a job that failed restoring becomes one line with its cause."""
        from headrace.jobs.monitor import root_cause

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                detail = self.get(f"/jobs/{job_id}")
            except ServiceError:
                time.sleep(0.3)  # not known to the dispatcher yet
                continue
            if detail["state"] in ("FAILED", "FAILING", "CANCELED"):
                exceptions = self.get(f"/jobs/{job_id}/exceptions?maxExceptions=1")
                cause = root_cause(str(exceptions.get("root-exception") or detail["state"]))
                raise ServiceError(f"job {job_id} could not resume from {source}: {cause}",
                                   hint="see 'headrace logs'")
            running = [v for v in detail.get("vertices", []) if v.get("status") == "RUNNING"]
            if detail["state"] == "RUNNING" and len(running) == len(detail.get("vertices", [])) > 0:
                return
            time.sleep(0.3)
        raise ServiceError(f"job {job_id} did not start running from {source} within {timeout_s:.0f}s",
                           hint="see 'headrace logs'")

    def placement(self, job_id: str) -> list[tuple[str, str, int]]:
        """Where a job's subtasks run: ``(vertex name, TaskManager endpoint, subtasks)`` rows."""
        rows = []
        for vertex in self.get(f"/jobs/{job_id}")["vertices"]:
            for tm in self.get(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]:
                count = sum(tm.get("status-counts", {}).values())
                rows.append((vertex["name"], f"{tm.get('endpoint', '?')} ({tm.get('taskmanager-id', '?')[:12]})",
                             count))
        return rows

    def cancel(self, job_id: str) -> None:
        self._request(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def last_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        completed = (self.get(f"/jobs/{job_id}/checkpoints").get("latest") or {}).get("completed")
        return dict(completed) if completed else None

    def counts(self, job_id: str) -> tuple[float | None, float | None, float | None]:
        """(records in, dead-lettered, late) since the job's current start: Headrace's own counters."""
        counters = self.headrace_counters(job_id)
        return (counters.get("records_in"), counters.get("dead_lettered"), counters.get("late"))

    def headrace_counters(self, job_id: str) -> dict[str, float]:
        """Every counter in the metric group ``headrace`` of the job's operators, summed over
        operators and subtasks, by name (``records_in``, ``dead_lettered``, ``late``, …)."""
        totals: dict[str, float] = {}
        for vertex in self.get(f"/jobs/{job_id}")["vertices"]:
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
            names = [m["id"] for m in self.get(base) if ".headrace." in m["id"]]
            if not names:
                continue
            for metric in self.get(base + "?get=" + ",".join(names)):
                name = metric["id"].rsplit(".headrace.", 1)[1]
                totals[name] = totals.get(name, 0.0) + float(metric["value"])
        return totals

    def low_watermark(self, job_id: str, match: str = "GroupWindowAggregate") -> int | None:
        """The lowest input watermark (epoch ms) of the vertex whose name contains ``match``."""
        detail = self.get(f"/jobs/{job_id}")
        vertex = next((v for v in detail["vertices"] if match in v["name"]), None)
        if vertex is None:
            return None
        marks = [int(w["value"]) for w in self.get(f"/jobs/{job_id}/vertices/{vertex['id']}/watermarks")
                 if str(w.get("value", "")).lstrip("-").isdigit()]
        return min(marks) if marks else None
