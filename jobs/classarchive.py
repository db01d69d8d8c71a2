"""A class-data-sharing archive for the embedded profile's JVM, so a warm ``headrace run`` starts sooner.

A local run of the example loads some 20,000 classes (Flink, its planner, Calcite) and spends
seconds doing it; the JVM can instead map the classes it loaded last time from an archive
(``-XX:SharedArchiveFile``, JDK 13+). The first embedded ``headrace run`` of a given JVM and
Flink writes the archive (``-XX:ArchiveClassesAtExit``) when its JVM exits: the command ends its
JVM itself, once the views are printed, and waits for the archive (a few seconds, once). Later runs
map it. Measured on the example: a warm run in 8.9 s instead of 12.4 s (medians; ``README.md``).

The archive is kept only once its JVM has exited normally: a JVM that maps a truncated archive
dies of SIGBUS, so a half-written file is never given the final name. The JVM itself refuses an
archive whose JDK or class path differ (the key below avoids asking it to). Only the CLI's own
process writes one (``allow_writing``): a test calling ``run_embedded`` in its interpreter keeps
the JVM it shares with later tests. ``HEADRACE_EMBEDDED_CDS=off`` turns it off;
``HEADRACE_CDS_DIR`` moves it (default ``~/.cache/headrace/cds``; the three newest, ~120 MB each).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: JVM messages about the archive (mapped or refused) stay out of the user's terminal
QUIET = "-Xlog:cds=off,cds+dynamic=off"

#: HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC (0xf00baba8), little-endian as written on x86-64 and arm64
DYNAMIC_MAGIC = bytes.fromhex("a8ab0bf0")

#: archives kept (~120 MB each)
KEEP = 3

_may_write = False
_writing: Path | None = None


def allow_writing() -> None:
    """This process is ``headrace`` itself, so it may end its JVM to write the archive."""
    global _may_write
    _may_write = True


def directory() -> Path:
    return Path(os.environ.get("HEADRACE_CDS_DIR", Path.home() / ".cache" / "headrace" / "cds"))


def _key(jvm_args: list[str]) -> str:
    """The JDK, Flink's jars and the JVM's flags: a change of any gives another archive."""
    import pyflink
    from pyflink.pyflink_gateway_server import find_java_executable

    digest = hashlib.sha256()
    java = Path(os.path.realpath(_which(find_java_executable())))
    for path in (java, *sorted(java.parent.parent.glob("lib/server/libjvm.*"))):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    home = Path(pyflink.__file__).parent
    for path in sorted([*home.glob("lib/*.jar"), *home.glob("opt/flink-python*.jar")]):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(" ".join(jvm_args).encode())
    return digest.hexdigest()[:16]


def _which(executable: str) -> str:
    if os.sep in executable:
        return executable
    import shutil

    return shutil.which(executable) or executable


def jvm_args(other_args: list[str]) -> list[str]:
    """The flags that map this JVM's archive, or have it written at exit; [] if neither applies."""
    global _writing
    if sys.platform != "linux" or os.environ.get("HEADRACE_EMBEDDED_CDS", "").lower() == "off":
        return []
    from pyflink import java_gateway

    if java_gateway._gateway is not None:  # this process's JVM is running already
        return []
    try:
        key = _key(other_args)
    except OSError:
        return []
    final = directory() / f"{key}.jsa"
    if final.is_file():
        return [f"-XX:SharedArchiveFile={final}", QUIET]
    if not _may_write:
        return []
    try:
        directory().mkdir(parents=True, exist_ok=True)
        _forget_stale_parts()  # runs that failed before they could save theirs leave ~120 MB each
    except OSError:  # an unwritable cache: runs start as they always did
        return []
    _writing = directory() / f"{key}.{os.getpid()}.part"
    return [f"-XX:ArchiveClassesAtExit={_writing}", QUIET]


def _gateway_pid() -> int | None:
    """This process's child running PyFlink's gateway server (its JVM)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and b"PythonGatewayServer" in Path(f"/proc/{entry}/cmdline").read_bytes():
                return int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return None


def _exit_status(pid: int, timeout_s: float) -> int | None:
    """The wait status of ``pid`` (our child) once it has exited, without reaping it; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None  # reaped by someone else: its status is unknown
        if fields[0] in ("Z", "X"):
            return int(fields[-1])  # exit_code (Linux 3.5+): the status waitpid would give
        time.sleep(0.05)
    return None


def save(say: Callable[[str], None]) -> None:
    """If this run's JVM is to write the archive: end it now, wait, and keep the archive if whole."""
    global _writing
    part, _writing = _writing, None
    if part is None:
        return
    try:
        _save(part, say)
    except OSError as exc:  # the run itself succeeded: say so, and start as before next time
        part.unlink(missing_ok=True)
        say(f"  not saved ({exc}); runs start as before")


def _save(part: Path, say: Callable[[str], None]) -> None:
    pid = _gateway_pid()
    if pid is None:
        part.unlink(missing_ok=True)
        return
    say("saving the JVM's loaded classes, so later runs start faster (once) …")
    from pyflink.java_gateway import get_gateway

    get_gateway()._gateway_client.is_connected = False  # py4j's finalizers would call the JVM that is going
    os.kill(pid, signal.SIGTERM)
    status = _exit_status(pid, 120.0)
    # an exit (143 for SIGTERM; 1 if the gateway noticed first) comes after the archive is written;
    # a JVM that fails to write it removes the file; a JVM that crashes has no exit status
    if status is not None and os.WIFEXITED(status) and _whole(part):
        final = part.with_name(part.name.split(".")[0] + ".jsa")
        part.replace(final)
        # the newest few (another virtualenv or JDK alternating with this one), not one per upgrade
        archives = sorted(directory().glob("*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in archives[KEEP:]:
            old.unlink(missing_ok=True)
    else:
        part.unlink(missing_ok=True)
        say(f"  not saved (the JVM's exit status: {status}); runs start as before")
    _forget_stale_parts()


def _whole(part: Path) -> bool:
    """A dynamic archive's magic number at its start (the JVM checks the rest when it maps it)."""
    try:
        with part.open("rb") as handle:
            return handle.read(4) == DYNAMIC_MAGIC
    except OSError:
        return False


def _forget_stale_parts() -> None:
    """Parts whose writer is gone (a run killed while writing): never whole, never used."""
    for part in directory().glob("*.part"):
        pid = part.name.split(".")[1]
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            part.unlink(missing_ok=True)
