"""Transport options: their defaults, their meaning here and their validation.

Every option that kombu's redis transport accepts is accepted here with the
same default, except ``visibility_timeout`` (300 s instead of 3600 s, because
live consumers renew their entries) and ``body_encoding`` (None: the body is
stored as bytes). The ones that only make sense for lists (the ``unacked_*`` hash
and lock, PUB/SUB prefixes) are accepted and ignored, as listed in
``IGNORED_OPTIONS``. Unknown keys are ignored, as kombu does, because Celery
passes its own keys through ``broker_transport_options``; one that looks like
a misspelled option name is logged with the name it resembles.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kombu.utils.scheduling import CYCLE_ALIASES

logger = logging.getLogger(__name__)

#: Options of kombu's redis transport that this transport accepts and ignores,
#: with the reason.
IGNORED_OPTIONS: dict[str, str] = {
    "ack_emulation": "acks are native: the pending entries list records them",
    "unacked_key": "the pending entries list replaces the unacked hash",
    "unacked_index_key": "the pending entries list records delivery times",
    "unacked_mutex_key": "the reclaim script is atomic, so no lock is needed",
    "unacked_mutex_expire": "the reclaim script is atomic, so no lock is needed",
    "unacked_restore_limit": "each reclaim scan takes at most the prefetch credit",
    "unacked_restore_throttle": "every reclaim scan runs; they are cheap",
    "fanout_prefix": "fanout uses streams, not PUB/SUB channels",
    "fanout_patterns": "fanout delivers to every bound queue, as in AMQP",
    "reauth_check_interval": "redis-py re-authenticates on reconnect",
}

DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)


class _Invalid(ValueError):
    """Raised by a validator; the caller adds the option name and value."""


def _is_finite_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
    )


def _positive_number(value: Any) -> float:
    if not _is_finite_number(value) or value <= 0:
        raise _Invalid("a finite number of seconds greater than 0")
    return float(value)


def _non_negative_number(value: Any) -> float:
    if not _is_finite_number(value) or value < 0:
        raise _Invalid("a finite number of seconds, 0 or more")
    return float(value)


def _optional_positive_number(value: Any) -> float | None:
    return None if value is None else _positive_number(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid("a whole number greater than 0")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid("a whole number, 0 or more (0 means no limit)")
    return value


def _optional_positive_int(value: Any) -> int | None:
    return None if value is None else _positive_int(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


def _non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("a non-empty string")
    return value


def _optional_non_empty_string(value: Any) -> str | None:
    return None if value is None else _non_empty_string(value)


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _priority_steps(value: Any) -> tuple[int, ...]:
    allowed = "a non-empty, strictly increasing list of whole numbers from 0 to 9"
    try:
        steps = tuple(value)
    except TypeError:
        raise _Invalid(allowed) from None
    if not steps or any(
        isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= 9
        for step in steps
    ):
        raise _Invalid(allowed)
    if list(steps) != sorted(set(steps)):
        raise _Invalid(allowed)
    return steps


def _queue_order_strategy(value: Any) -> str:
    if not isinstance(value, str) or (
        value not in CYCLE_ALIASES and ":" not in value and "." not in value
    ):
        names = ", ".join(sorted(CYCLE_ALIASES))
        raise _Invalid(f"one of {names}, or a dotted path to a cycle class")
    return value


def _optional_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _Invalid("True, False or None")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("True or False")
    return value


def _any(value: Any) -> Any:
    return value


@dataclass
class TransportOptions:
    """Validated transport options, with kombu's names and defaults."""

    #: Seconds an entry may stay idle in the pending entries list before
    #: a reclaim scan hands it to another consumer. A live consumer touches its
    #: entries several times per timeout, so only a dead one loses them.
    visibility_timeout: float = 300.0
    #: Seconds between two reclaim scans (XPENDING IDLE, XCLAIM) of a consuming
    #: channel.
    unacked_restore_interval: float = 10.0
    #: Seconds between two sweeps for state left by queues that are gone:
    #: bindings of expired queues and fanout groups of deleted queues.
    sweep_interval: float = 60.0
    #: Priority buckets: one stream per step, lower steps served first.
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    #: Order in which the queues of one consumer are read inside a step.
    queue_order_strategy: str = "round_robin"
    #: Prefix of every key this transport writes.
    global_keyprefix: str = ""
    #: Prefix of consumer group names; the queue name follows it.
    consumer_group_prefix: str = "kombu:"
    #: Stable consumer name of this process (unique per process, for example
    #: the Celery node name). A process that restarts under the same name
    #: takes its pending entries back at once. None: a new name per channel.
    consumer_name: str | None = None
    #: Separator inside binding-set members, as in kombu.
    sep: str = "\x06\x16"
    #: Seconds a blocking read waits on the server before it is sent again;
    #: None means 1 s, the same period as kombu's BRPOP timeout.
    polling_interval: float | None = None
    #: Prefetch limit used when the consumer sets none (0: no limit).
    prefetch_count: int = 0
    #: Most ready entries a queue stream may hold before a publish is
    #: refused; None means no cap. Never trims an unread entry.
    stream_maxlen: int | None = None
    #: Deliveries without an ack after which a message goes to its queue's
    #: dead-letter stream instead of being delivered again; None: no limit.
    max_deliveries: int | None = None
    #: Send messages rejected with requeue=False to the dead-letter stream
    #: instead of dropping them.
    dead_letter_rejected: bool = False
    #: Send acks with the channel's next round trip instead of before ack()
    #: returns. Faster; a crash in between delivers those messages again.
    batch_acks: bool = False
    #: Codec applied to the body; None stores the body bytes as they are.
    body_encoding: str | None = None
    #: Queue that receives messages no binding matched.
    deadletter_queue: str | None = None
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None
    socket_keepalive: bool | None = None
    socket_keepalive_options: Any = None
    retry_on_timeout: bool | None = None
    max_connections: int = 10
    health_check_interval: float = 25.0
    client_name: str | None = None
    #: Options this transport accepts but does not use.
    ignored: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> TransportOptions:
        """Validate ``options`` and return them with defaults filled in.

        Raises:
            ValueError: an option has a value of the wrong type or range. The
                message names the option, the value and what is allowed.
        """
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name == "ignored" or spec.name not in options:
                continue
            value = options[spec.name]
            try:
                values[spec.name] = _VALIDATORS[spec.name](value)
            except _Invalid as exc:
                raise ValueError(
                    f"Invalid transport option {spec.name}={value!r}: expected {exc}."
                ) from None
        ignored = {name: options[name] for name in IGNORED_OPTIONS if name in options}
        _warn_about_misspellings(options)
        return cls(ignored=ignored, **values)

    @property
    def block_timeout_s(self) -> float:
        """Seconds one blocking read waits on the server."""
        return self.polling_interval if self.polling_interval is not None else 1.0


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "visibility_timeout": _positive_number,
    "unacked_restore_interval": _positive_number,
    "sweep_interval": _positive_number,
    "priority_steps": _priority_steps,
    "queue_order_strategy": _queue_order_strategy,
    "global_keyprefix": _string,
    "consumer_group_prefix": _non_empty_string,
    "consumer_name": _optional_non_empty_string,
    "sep": _non_empty_string,
    "polling_interval": _optional_positive_number,
    "prefetch_count": _non_negative_int,
    "stream_maxlen": _optional_positive_int,
    "max_deliveries": _optional_positive_int,
    "dead_letter_rejected": _bool,
    "batch_acks": _bool,
    "body_encoding": _optional_string,
    "deadletter_queue": _optional_string,
    "socket_timeout": _optional_positive_number,
    "socket_connect_timeout": _optional_positive_number,
    "socket_keepalive": _optional_bool,
    "socket_keepalive_options": _any,
    "retry_on_timeout": _optional_bool,
    "max_connections": _positive_int,
    "health_check_interval": _non_negative_number,
    "client_name": _optional_string,
}


#: Unknown option names already logged: every connection validates the
#: options again, and one warning per process is enough.
_warned_names: set[str] = set()


def _warn_about_misspellings(options: Mapping[str, Any]) -> None:
    """Log unknown option names that closely resemble a known one, once each."""
    known = [*_VALIDATORS, *IGNORED_OPTIONS]
    for name in options:
        if not isinstance(name, str) or name in _VALIDATORS or name in IGNORED_OPTIONS:
            continue
        if name in _warned_names:
            continue
        matches = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if matches:
            _warned_names.add(name)
            logger.warning(
                "Unknown transport option %r is ignored, so %r keeps its "
                "default. Rename it if it was meant to set %r.",
                name,
                matches[0],
                matches[0],
            )
