"""The benchmark's meter of a job's processes (tests/bench/jobs.py, ``Tree``): it finds the job's
descendants, adds up their memory, and lists /proc again only when its list is old."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.bench.jobs import Tree

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
