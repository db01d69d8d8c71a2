"""Live updates: a view's new and updated rows, read once from the store and fanned out to every
subscriber (GraphQL subscriptions, gRPC ``Subscribe``, the web page).

One thread, :class:`ChangeHub`, feeds every subscribed view; a view is read once per change,
however many clients subscribe to it, and each subscriber gets the rows its token may see.

A store's reader may say how its views' changes are found (``feed``) and when to look
(``listen``): PostgreSQL's are exact and prompt, by change stamps and notices
(``connectors/postgres/reader.py``). Other stores are read every ``interval``: the newest
``max_rows`` rows, compared with the previous read (:class:`PollingFeed`). Every feed is also
read every ``interval``, in case a notice is missed (on a read replica, say).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.connectors.serving.query import ViewQuery
from headrace.schemas.views import RECORDS_COLUMN, ServedView

log = logging.getLogger("headrace.serve.changes")

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

    def __init__(self, stores: dict[str, Any], *, interval_s: float = 1.0, max_rows: int = 1000) -> None:
        self.stores = stores
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
        feed = store.feed(view, self.max_rows) if hasattr(store, "feed") else PollingFeed(view, store, self.max_rows)
        self._baseline(feed)
        return feed

    def _baseline(self, feed: Any) -> None:
        try:
            feed.poll()
        except Exception as exc:  # the store is away: the first successful poll is the baseline
            log.warning("subscription to %s starts while its store is unavailable: %s", feed.view.name,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def _run(self) -> None:
        for kind, store in self.stores.items():
            if hasattr(store, "listen"):  # the store says when something changed: feeds are read at once
                threading.Thread(target=store.listen, args=(self.wake.set, self.stopped, self.interval_s),
                                 name=f"headrace-changes-{kind}", daemon=True).start()
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


def _offer_all(group: list[Subscription], rows: Rows) -> None:
    for subscription in group:
        subscription.offer(rows)
