"""Read plans of a consuming channel: the streams, their order, and the entries read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .keys import KeySpace

#: Stream modes understood by the Lua scripts.
QUEUE_MODE = "q"
FANOUT_MODE = "f"


@dataclass(frozen=True)
class ReadTarget:
    """One stream read on behalf of one queue, through the queue's group."""

    stream: str
    group: str
    queue: str
    #: 'q' for the queue's own stream, 'f' for a fanout exchange's stream.
    kind: str
    no_ack: bool = False
    expire_ms: int = 0

    @property
    def mode(self) -> str:
        """The mode argument of the fetch script: upper case reads with NOACK."""
        return self.kind.upper() if self.no_ack else self.kind


@dataclass
class Entry:
    """An entry read from a stream and not yet handed to a consumer callback."""

    target: ReadTarget
    entry_id: str
    fields: list[bytes] | None
    delivery_count: int = 1


@dataclass(frozen=True)
class Delivery:
    """Origin of a delivered message, kept until it is acked or rejected."""

    target: ReadTarget
    entry_id: str
    #: How many times the message was delivered, this delivery included.
    deliveries: int = 1


def build_plan(
    keys: KeySpace,
    queues: Sequence[str],
    steps: Sequence[int],
    fanout_exchanges: Mapping[str, Iterable[str]],
    no_ack_queues: set[str],
    expires_ms: dict[str, int],
) -> list[ReadTarget]:
    """Order the streams a channel reads: fanout first, then step by step.

    Fanout streams come first because they carry remote control and events,
    which should not wait behind a task backlog. Queue streams follow in
    priority order, all queues' step 0 before any queue's step 3, and inside a
    step the queues keep the order given (the queue order strategy's order).
    """
    plan: list[ReadTarget] = []
    for queue in queues:
        for exchange in sorted(fanout_exchanges.get(queue, ())):
            plan.append(
                ReadTarget(
                    stream=keys.fanout_stream(exchange),
                    group=keys.group(queue),
                    queue=queue,
                    kind=FANOUT_MODE,
                    no_ack=queue in no_ack_queues,
                )
            )
    for step in steps:
        for queue in queues:
            plan.append(
                ReadTarget(
                    stream=keys.queue_stream(queue, step),
                    group=keys.group(queue),
                    queue=queue,
                    kind=QUEUE_MODE,
                    no_ack=queue in no_ack_queues,
                    expire_ms=expires_ms.get(queue, 0),
                )
            )
    return plan
