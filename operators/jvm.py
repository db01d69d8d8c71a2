"""Headrace's JVM functions: Java sources in ``operators/java/``, built once into the jar cache.

The hot per-record work (decode, JSON Schema check, field extraction, event time) runs in the
JVM as Flink scalar functions, so records never cross into Python for a schema in the supported
subset (see ``schemas/jsonschema.py``). The jar is compiled with ``javac`` against the Flink jars
of the installed PyFlink and named after a hash of its sources and the Flink version, so an edit
or an upgrade builds a new one and a stale jar is never used.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from headrace.connectors.jars import cache_dir, remove_orphaned_parts
from headrace.schemas.errors import JarError

#: the Java sources, shipped as package data (pip installs packages as files, so a Path)
SOURCES = Path(str(importlib.resources.files("headrace.operators").joinpath("java")))
PACKAGE = "dev.headrace.functions"
VALIDATE_CLASS = f"{PACKAGE}.ValidateJson"
DECODE_CLASS = f"{PACKAGE}.DecodeBinary"
EVENT_TIME_CLASS = f"{PACKAGE}.EventTime"
PAYLOAD_CLASS = f"{PACKAGE}.PayloadDigest"
#: table factories in the jar (found by Flink through META-INF/services)
FACTORIES = ("dev.headrace.connectors.SafeSinkFactory$Jdbc", "dev.headrace.connectors.SafeSinkFactory$Kafka",
             "dev.headrace.connectors.RecordSource", "dev.headrace.connectors.ClientSink$Factory")
#: the metric reporter in the jar, used as a plugin by the session cluster (see jobs/cluster.py)
REPORTERS = ("dev.headrace.metrics.LoopbackPrometheusReporterFactory",)


def prometheus_plugin_jar() -> Path:
    """Flink's Prometheus reporter, which the loopback reporter extends."""
    return next((_flink_lib().parent / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))


def _flink_lib() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent / "lib"


#: compile-time stand-ins for the kafka-clients types EnrichPrefetch.java uses (see stubs/README.md):
#: javac checks against them (-sourcepath, -implicit:none) and the jar never holds them
STUBS = SOURCES / "stubs"


def _sources() -> list[Path]:
    """The jar's Java sources (not the stubs)."""
    return sorted(p for p in SOURCES.rglob("*.java") if STUBS not in p.parents)


def jar_path() -> Path:
    """Where the jar for these sources and this Flink lives in the cache."""
    digest = hashlib.sha256()
    for source in sorted(SOURCES.rglob("*.java")):  # the stubs too
        digest.update(source.relative_to(SOURCES).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(",".join(sorted(p.name for p in _flink_lib().glob("flink-*.jar"))).encode())
    digest.update(",".join(FACTORIES + REPORTERS).encode())
    return cache_dir() / f"headrace-functions-{digest.hexdigest()[:16]}.jar"


def build(say: Callable[[str], None] = print) -> Path:
    """The functions jar, compiled now if the cache has none for these sources."""
    target = jar_path()
    if target.exists():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise JarError("cannot build Headrace's JVM functions: 'javac' is not installed",
                       hint="install a JDK (apt-get install openjdk-17-jdk-headless)")
    say(f"building Headrace's JVM functions into {target.name} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="headrace-javac-") as tmp:
        classes = Path(tmp) / "classes"
        command = [javac, "-nowarn", "--release", "11", "-encoding", "UTF-8", "-d", str(classes),
                   "-sourcepath", str(STUBS), "-implicit:none",
                   "-cp", f"{_flink_lib() / '*'}:{prometheus_plugin_jar()}", *map(str, _sources())]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
            raise JarError(f"javac failed on Headrace's JVM functions: {first}",
                           hint="the sources are in operators/java/; rerun with --verbose for the full output")
        partial = target.with_suffix(f".part-{os.getpid()}")  # two processes may build at once
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: headrace\n\n")
            jar.writestr("META-INF/services/org.apache.flink.table.factories.Factory", "\n".join(FACTORIES) + "\n")
            jar.writestr("META-INF/services/org.apache.flink.metrics.reporter.MetricReporterFactory",
                         "\n".join(REPORTERS) + "\n")
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        partial.replace(target)
    for stale in target.parent.glob("headrace-functions-*.jar"):
        if stale != target:
            stale.unlink(missing_ok=True)
    remove_orphaned_parts(target.parent.glob("headrace-functions-*.part-*"))
    return target
