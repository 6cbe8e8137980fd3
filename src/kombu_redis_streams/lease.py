"""A background thread that keeps a live consumer's entries from being reclaimed.

Another consumer takes over an entry once it was idle for
``visibility_timeout``. The PEL's idle time of an entry only resets when its
owner touches it, so this thread touches every entry its transport's channels
hold (XCLAIM to the same consumer with JUSTID) a few times per timeout. It
runs on its own, so a long task that keeps the consuming thread busy, or a
program that holds messages without calling ``drain_events``, keeps its
entries. When the process dies the touching stops, and after
``visibility_timeout`` the entries go to another consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

#: Touches per visibility timeout; several, so one late touch loses nothing.
TOUCHES_PER_TIMEOUT = 4

#: Upper bound of the period between two touches, in seconds.
MAX_TOUCH_PERIOD_S = 60.0


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
        for channel in list(self._channels()):
            try:
                channel.renew_held()
            except self._connection_errors as exc:
                logger.warning(
                    "Could not renew the held entries of channel %s (%s); retrying "
                    "in %.1f s.",
                    getattr(channel, "channel_id", "?"),
                    exc,
                    self.period_s,
                )

    def _run(self) -> None:
        while not self._stopped.wait(self.period_s):
            try:
                self.touch_all()
            except Exception:  # the thread must outlive any single failure
                logger.exception(
                    "Renewing held entries failed; retrying in %.1f s.", self.period_s
                )
