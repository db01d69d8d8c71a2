"""The benchmark's meter of a job's processes (tests/bench/jobs.py, ``Tree``): it finds the job's
descendants, adds up their memory and CPU, and lists /proc again only when its list is old; the
CPU of the running window is interpolated from its samples."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import time

from tests.bench.jobs import Meter, Tree, cpu_between, running_window

#: a child that holds 64 MiB (written, so resident) and a grandchild, until its stdin closes
HOLDER = ("import subprocess, sys; block = bytearray(64 << 20); block[::4096] = b'x' * (len(block) // 4096); "
          "g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE); "
          "print(g.pid, flush=True); sys.stdin.read(); g.stdin.close(); g.wait()")


def _holder() -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def _end(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)


def test_the_meter_finds_the_descendants_and_adds_up_their_memory() -> None:
    child, grandchild = _holder()
    try:
        assert {os.getpid(), child.pid, grandchild} <= set(Tree(os.getpid(), refresh_s=0).pids())
        # the child's own tree: not this process's, whose other children (a test's services) come and go
        tree = Tree(child.pid, refresh_s=0)
        assert set(tree.pids()) == {child.pid, grandchild}
        assert tree.rss_bytes() >= 64 << 20
    finally:
        _end(child)
    assert tree.rss_bytes() == 0  # both have ended


def test_the_meter_lists_the_processes_again_only_when_its_list_is_old() -> None:
    tree = Tree(os.getpid(), refresh_s=0.5)
    listed = tree.pids()
    child, _ = _holder()
    try:
        assert tree.pids() == listed  # the list of a moment ago: no scan of /proc
        time.sleep(0.6)
        assert child.pid in tree.pids()
    finally:
        _end(child)
    assert tree.rss_bytes() > 0  # a listed process that has ended is passed over


def test_the_meter_adds_up_the_cpu_of_the_tree() -> None:
    # a child that spins for 0.6 s of CPU, then waits for its stdin
    spin = ("import sys, time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
            "print('done', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        rss, cpu = Tree(child.pid, refresh_s=0).sample()
        assert rss > 0 and 0.6 <= cpu < 3.0
    finally:
        _end(child)


def test_the_running_window_and_the_cpu_within_it() -> None:
    seen = {"timestamps": {"INITIALIZING": 1_000, "RUNNING": 2_000}, "vertex_starts": [2_100, 2_500]}
    assert running_window(seen, net_runtime_ms=11_500) == (2_500, 12_500)  # the last vertex's start → FINISHED
    assert running_window({"timestamps": {}}, 5_000) is None
    # cumulative CPU-s sampled every 0.5 s: 10 CPU-s of start-up, then 1.5 a second, then 2 of shutdown
    samples = [(t / 2, 10.0 + 1.5 * max(0.0, min(t / 2, 12.5) - 2.5) + (2.0 if t >= 28 else 0.0))
               for t in range(0, 32)]
    assert abs(cpu_between(samples, 2.5, 12.5) - 15.0) < 1e-9  # neither the start-up nor the shutdown
    assert abs(cpu_between(samples, 2.75, 12.25) - 14.25) < 1e-9  # interpolated between samples at both ends
    assert math.isnan(cpu_between(samples, 2.5, 30.0))  # the samples end before the window does
    assert math.isnan(cpu_between(samples, 5.0, 4.0))


def test_the_meter_samples_from_before_submission_with_the_collector_held_off_until_then() -> None:
    meter = Meter()
    try:
        assert not gc.isenabled()  # no collection on its thread while the job is planned
        meter.submitted()
        assert gc.isenabled()
        time.sleep(0.35)
        times = [t for t, _ in meter.cpu_samples]
        assert len(times) >= 3 and times == sorted(times) and meter.peak_rss > 0
    finally:
        gc.enable()
        meter.stop()
