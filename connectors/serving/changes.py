"""Live updates: a view's new and updated rows, read once from the store and fanned out to every
subscriber (GraphQL subscriptions, gRPC ``Subscribe``, the web page).

One thread, :class:`ChangeHub`, feeds every subscribed view; a view is read once per change,
however many clients subscribe to it, and each subscriber gets the rows its token may see.

PostgreSQL views are exact and prompt. The sink stamps every row it inserts or updates with its
writing transaction (``_xid``, see ``connectors/postgres.py``) and notifies ``headrace_changes``
once per statement. The hub listens on that channel and, on each notice (and every ``interval``
in case one is missed, e.g. on a read replica), reads the rows written by transactions that its
previous snapshot did not see::

    _xid >= pg_snapshot_xmin(prev) AND NOT pg_visible_in_snapshot(_xid, prev)

in the same repeatable-read transaction that takes the next snapshot. A transaction that commits
late is still caught (its id is not visible in ``prev``), and nothing is read twice.

Other stores (Redis, InfluxDB, the embedded SQLite) are read every ``interval``: the newest
``max_rows`` rows, compared with the previous read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.connectors.serving.query import ViewQuery, json_value
from headrace.schemas.views import RECORDS_COLUMN, ServedView

log = logging.getLogger("headrace.serve.changes")

CHANNEL = "headrace_changes"
Rows = list[dict[str, Any]]


class Overflow(Exception):
    """A subscriber that fell too far behind: its subscription ends with this reason."""


@dataclass(eq=False)
class Subscription:
    """One client's stream of changed rows (batches, as the store gave them)."""

    view: ServedView
    accept: Callable[[Rows], Rows]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Rows | Exception] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))

    def offer(self, rows: Rows) -> None:
        """In the subscriber's loop: queue what this subscriber may see of ``rows``."""
        mine = self.accept(rows)
        if not mine:
            return
        try:
            self.queue.put_nowait(mine)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Overflow("subscriber too slow: 1,000 updates behind"))

    async def batches(self) -> AsyncIterator[Rows]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


class PostgresFeed:
    """Rows written since the previous snapshot (see the module's docstring)."""

    def __init__(self, view: ServedView, pool: Any) -> None:
        from psycopg import sql

        self.view, self.pool = view, pool
        self.snapshot: str | None = None
        columns = [n for n, _ in view.view.columns if n != RECORDS_COLUMN]
        self.statement = sql.SQL(
            "SELECT {cols} FROM {table} WHERE _xid >= pg_snapshot_xmin(%(prev)s::pg_snapshot) "
            "AND NOT pg_visible_in_snapshot(_xid, %(prev)s::pg_snapshot) ORDER BY window_start, window_end"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)), table=sql.Identifier(view.view.name))

    def poll(self) -> Rows:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            now = row[0] if row else None
            if self.snapshot is None:
                self.snapshot = now
                return []
            cursor = conn.execute(self.statement, {"prev": self.snapshot})
            names = [d.name for d in cursor.description or ()]
            rows = [{n: json_value(n, v) for n, v in zip(names, values, strict=True)} for values in cursor]
        self.snapshot = now
        return rows


class PollingFeed:
    """The newest rows of a view, read every interval and compared with the previous read."""

    def __init__(self, view: ServedView, store: Any, max_rows: int) -> None:
        self.view, self.store, self.max_rows = view, store, max_rows
        self.seen: dict[tuple[Any, ...], dict[str, Any]] | None = None
        self.fields = tuple(n for n, _ in view.view.columns if n != RECORDS_COLUMN)

    def poll(self) -> Rows:
        query = ViewQuery(view=self.view, fields=self.fields, limit=self.max_rows)
        rows = self.store.read(query)["rows"]
        names = self.view.view.key_names
        now = {tuple(r[k] for k in names): r for r in rows}
        before, self.seen = self.seen, now
        if before is None:
            return []
        return sorted((r for key, r in now.items() if before.get(key) != r),
                      key=lambda r: (r["window_start"], r["window_end"]))


class ChangeHub:
    """Feeds each subscribed view from its store and fans the changes out to the subscribers."""

    def __init__(self, stores: dict[str, Any], listen_conninfo: dict[str, Any] | None, *, interval_s: float = 1.0,
                 max_rows: int = 1000) -> None:
        self.stores, self.listen_conninfo = stores, listen_conninfo
        self.interval_s, self.max_rows = interval_s, max_rows
        self.lock = threading.Lock()
        self.subscribers: dict[str, list[Subscription]] = {}
        self.feeds: dict[str, Any] = {}
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.failing: dict[str, str] = {}
        self.delivered = 0  # batches handed to subscribers' loops, for metrics and tests

    # -- subscribers (any event loop) --------------------------------------------------------

    async def subscribe(self, view: ServedView, accept: Callable[[Rows], Rows]) -> Subscription:
        """A subscription to ``view``'s changes from now on; ``accept`` keeps what the client may see."""
        subscription = Subscription(view, accept, asyncio.get_running_loop())
        while True:
            with self.lock:
                feed = self.feeds.get(view.name)
            if feed is None:
                fresh = await asyncio.to_thread(self._new_feed, view)  # from here on, every change is delivered
                with self.lock:
                    feed = self.feeds.setdefault(view.name, fresh)
            with self.lock:
                if self.feeds.get(view.name) is not feed:
                    continue  # the last subscriber left meanwhile and took the feed with it
                self.subscribers.setdefault(view.name, []).append(subscription)
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="headrace-changes", daemon=True)
                    self.thread.start()
                return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            group = self.subscribers.get(subscription.view.name, [])
            if subscription in group:
                group.remove(subscription)
            if not group:  # the next first subscriber starts from a new baseline, not a stale one
                self.subscribers.pop(subscription.view.name, None)
                self.feeds.pop(subscription.view.name, None)

    def count(self) -> int:
        with self.lock:
            return sum(len(g) for g in self.subscribers.values())

    def close(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(5)

    # -- the feeding thread -----------------------------------------------------------------

    def _new_feed(self, view: ServedView) -> Any:
        """A feed for ``view``, with its baseline taken."""
        store = self.stores.get(view.store)
        if store is None:
            raise LookupError(f"views in {view.store} are not served")
        pool = getattr(store, "pool", None)
        feed: Any = PostgresFeed(view, pool) if pool is not None and self._stamped(pool, view) else (
            PollingFeed(view, store, self.max_rows))
        self._baseline(feed)
        return feed

    @staticmethod
    def _stamped(pool: Any, view: ServedView) -> bool:
        """Whether the view's table carries the sink's change stamps (tables from before do not)."""
        try:
            with pool.connection() as conn:
                # a table not created yet will be created by the current sink, with the stamps
                row = conn.execute("SELECT 1 WHERE to_regclass(%s) IS NULL OR EXISTS (SELECT 1 FROM pg_attribute "
                                   "WHERE attrelid = to_regclass(%s) AND attname = '_xid')",
                                   (f'"{view.view.name}"',) * 2).fetchone()
        except Exception:  # unreachable now: assume the current sink, whose tables are stamped
            return True
        if row is None:
            log.warning("view %s has no change stamps (its table predates them): subscriptions compare its "
                        "newest rows on every poll instead", view.name)
        return row is not None

    def _baseline(self, feed: Any) -> None:
        try:
            feed.poll()
        except Exception as exc:  # the store is away: the first successful poll is the baseline
            log.warning("subscription to %s starts while its store is unavailable: %s", feed.view.name,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def _run(self) -> None:
        listener = threading.Thread(target=self._listen, name="headrace-changes-listen", daemon=True)
        if self.listen_conninfo is not None:
            listener.start()
        while not self.stopped.is_set():
            self.wake.wait(self.interval_s)
            self.wake.clear()
            with self.lock:
                active = [(name, self.feeds[name]) for name, subs in self.subscribers.items()
                          if subs and name in self.feeds]
            for name, feed in active:
                try:
                    rows = feed.poll()
                except Exception as exc:
                    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    if self.failing.get(name) != reason:
                        log.warning("changes of %s unavailable: %s (retrying every %.1fs)", name, reason,
                                    self.interval_s)
                    self.failing[name] = reason
                    continue
                if self.failing.pop(name, None) is not None:
                    log.info("changes of %s flowing again", name)
                if rows:
                    self._dispatch(name, rows)

    def _dispatch(self, name: str, rows: Rows) -> None:
        with self.lock:
            subscribers = list(self.subscribers.get(name, []))
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
        for subscription in subscribers:
            by_loop.setdefault(subscription.loop, []).append(subscription)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_offer_all, group, rows)
                self.delivered += 1
            except RuntimeError:  # that loop has closed: its subscribers are gone
                for subscription in group:
                    self.unsubscribe(subscription)

    def _listen(self) -> None:
        """Wake the feeding thread on every notice from the sink's triggers."""
        import psycopg

        assert self.listen_conninfo is not None
        while not self.stopped.is_set():
            try:
                with psycopg.connect(**{**self.listen_conninfo, "connect_timeout": 3}, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wake.set()  # anything written while not listening is read now
                    while not self.stopped.is_set():
                        for _ in conn.notifies(timeout=self.interval_s, stop_after=1):
                            self.wake.set()
            except psycopg.Error:
                self.stopped.wait(self.interval_s)


def _offer_all(group: list[Subscription], rows: Rows) -> None:
    for subscription in group:
        subscription.offer(rows)
