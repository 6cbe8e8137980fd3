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
import threading
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

logger = logging.getLogger(__name__)

#: Touches per visibility timeout; several, so one late touch loses nothing.
TOUCHES_PER_TIMEOUT = 4

#: Upper bound of the period between two touches, in seconds.
MAX_TOUCH_PERIOD_S = 60.0

#: Seconds between two wake-ups of the thread; most find nothing due.
TICK_S = 0.5


class LeaseKeeper:
    """Touch the held entries of some channels from a daemon thread."""

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
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def touch_all(self) -> None:
        """Touch the held entries of every channel once."""
        self._for_each_channel("renew_held")

    def _for_each_channel(self, method: str, *args: Any) -> None:
        for channel in list(self._channels()):
            try:
                getattr(channel, method)(*args)
            except self._connection_errors as exc:
                logger.warning(
                    "Maintenance of channel %s failed (%s); it is retried in %.1f s.",
                    getattr(channel, "channel_id", "?"),
                    exc,
                    TICK_S,
                )

    def _run(self) -> None:
        next_touch = monotonic() + self.period_s
        tick_s = min(TICK_S, self.period_s)
        while not self._stopped.wait(tick_s):
            try:
                if monotonic() >= next_touch:
                    next_touch = monotonic() + self.period_s
                    self.touch_all()
                self._for_each_channel("refresh_expiry", monotonic())
                # Acks of a consumer that stopped reading must not wait long.
                self._for_each_channel("flush_acks")
            except Exception:  # the thread must outlive any single failure
                logger.exception(
                    "Channel maintenance failed; it is retried in %.1f s.", TICK_S
                )
