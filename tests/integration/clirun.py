"""Running ``headrace`` as a user does, in its own process group, with its output kept line by line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class CliRun:
    """One ``headrace`` command in the background (stdout and stderr merged into ``lines``)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.jobs.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``condition`` until true; returns the seconds it took. Fails with the output."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if condition():
                return time.monotonic() - started
            if self.proc.poll() is not None:
                raise AssertionError(f"headrace exited ({self.proc.returncode}) before {what}:\n{self.output[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout_s}s:\n{self.output[-4000:]}")

    def line_matching(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def finish(self, timeout_s: float = 300) -> int:
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"headrace did not finish within {timeout_s}s:\n{self.output[-4000:]}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """kill -9 of the command and everything it started (its Flink JVM, Python workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self._reader.join(5)
