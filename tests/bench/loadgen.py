"""An open-loop HTTP/1.1 load generator, lean enough to share two cores with the server it measures.

Requests are sent on a fixed schedule (``rate`` per second) whether or not earlier ones have been
answered, so a slow server shows up as latency rather than as a slower schedule (no coordinated
omission): each latency is measured from the request's *scheduled* time to its last byte. Requests
are prebuilt bytes; connections are kept alive and reused; a response is read by its
Content-Length. ``time.perf_counter`` is the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def get(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def offer(host: str, port: int, requests: Sequence[bytes], rate: float, seconds: float,
                max_connections: int = 256) -> Result:
    """Send ``rate × seconds`` requests (cycling through ``requests``) on schedule."""
    result = Result()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(max_connections)

    async def one(request: bytes, due: float) -> None:
        async with slots:
            reused = bool(idle)
            connection = idle.pop() if reused else await asyncio.open_connection(host, port)
            try:
                status = await _exchange(*connection, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connection[1].close()
                if not reused:
                    result.errors += 1
                    return
                # the server closed a kept-alive connection while it was idle: retry once on a new
                # one, as HTTP clients do (the latency still counts from the scheduled time)
                try:
                    connection = await asyncio.open_connection(host, port)
                    status = await _exchange(*connection, request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    connection[1].close()
                    return
            result.latencies.append(time.perf_counter() - due)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            idle.append(connection)

    total = int(rate * seconds)
    tasks = []
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(requests[i % len(requests)], due)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    for _, writer in idle:
        writer.close()
    return result
