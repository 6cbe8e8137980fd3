"""A background thread that keeps a live consumer's entries from being reclaimed.

Another consumer takes over an entry once it was idle for
``visibility_timeout``. The PEL's idle time of an entry only resets when its
owner touches it, so this thread touches every entry its transport's channels
hold (XCLAIM to the same consumer with JUSTID) a few times per timeout. It
runs on its own, so a long task that keeps the consuming thread busy, or a
program that holds messages without calling ``drain_events``, keeps its
entries. When the process dies the touching stops, and after
``visibility_timeout`` the entries go to another consumer.

The same thread refreshes the time to live of the queues a channel consumes
(``Queue(expires=...)``) three times per expiry, so an idle but active queue
never expires under its consumer.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

logger = logging.getLogger(__name__)

#: Touches per visibility timeout; several, so one late touch loses nothing.
TOUCHES_PER_TIMEOUT = 4

#: Upper bound of the period between two touches, in seconds.
MAX_TOUCH_PERIOD_S = 60.0

#: Seconds before maintenance that failed on a channel is tried again.
RETRY_S = 1.0

#: Shortest sleep between two rounds, so a clock step cannot make a busy loop.
MIN_SLEEP_S = 0.01


class LeaseKeeper:
    """Touch the held entries of some channels from a daemon thread.

    The thread sleeps until the next piece of work is due: the next touch, a
    queue's TTL refresh, or acks that waited too long in a channel's buffer.
    An idle consumer therefore wakes it once per touch period. Channels call
    :meth:`wake` when they add work that may be due sooner.
    """

    def __init__(
        self,
        channels: Callable[[], Iterable[Any]],
        visibility_timeout_s: float,
        connection_errors: tuple[type[BaseException], ...],
    ) -> None:
        self._channels = channels
        self.period_s = min(
            visibility_timeout_s / TOUCHES_PER_TIMEOUT, MAX_TOUCH_PERIOD_S
        )
        self._connection_errors = connection_errors
        self._stopped = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread unless it runs already."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopped.clear()
            self._thread = threading.Thread(
                target=self._run, name="kombu-streams-leases", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it briefly."""
        self._stopped.set()
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def wake(self) -> None:
        """Make the thread look again at when its next work is due."""
        self._wakeup.set()

    def touch_all(self) -> None:
        """Touch the held entries of every channel once."""
        for channel in list(self._channels()):
            self._guarded(channel, channel.renew_held)

    def maintain_all(self, now: float) -> float:
        """Do the due work of every channel; return when more work is due."""
        due = math.inf
        for channel in list(self._channels()):
            next_due = self._guarded(channel, channel.maintain, now)
            due = min(due, now + RETRY_S if next_due is None else next_due)
        return due

    def _guarded(self, channel: Any, method: Callable[..., Any], *args: Any) -> Any:
        """Call ``method``; on a connection error log it and return None."""
        try:
            return method(*args)
        except self._connection_errors as exc:
            logger.warning(
                "Maintenance of channel %s failed (%s); it is retried in %.1f s.",
                getattr(channel, "channel_id", "?"),
                exc,
                RETRY_S,
            )
            return None

    def _run(self) -> None:
        next_touch = monotonic() + self.period_s
        while not self._stopped.is_set():
            now = monotonic()
            try:
                if now >= next_touch:
                    next_touch = now + self.period_s
                    self.touch_all()
                due = min(next_touch, self.maintain_all(now))
            except Exception:  # the thread must outlive any single failure
                logger.exception(
                    "Channel maintenance failed; it is retried in %.1f s.", RETRY_S
                )
                due = now + RETRY_S
            self._wakeup.wait(max(due - monotonic(), MIN_SLEEP_S))
            # Work added after this point calls wake() again, and work added
            # before it is seen by the next round, so no wake-up is lost.
            self._wakeup.clear()
