"""Redis key names and consumer group names used by the transport.

Every key starts with ``global_keyprefix``. All keys of one queue (its stream
per priority step and its dead-letter stream) carry the queue name as their
hash tag, so a Lua script that touches several of them stays in one cluster
slot. The fanout stream of an exchange carries the exchange name as its tag.

NOTE: Redis hashes the whole key when the tag is empty, so a queue whose name
starts with ``}`` gets its keys spread over several cluster slots.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Sequence
from dataclasses import dataclass

#: Namespace of the keys that are not owned by one queue.
NAMESPACE = "_kombu_streams"


@dataclass(frozen=True)
class KeySpace:
    """Name every key and consumer group under one key prefix."""

    prefix: str = ""
    group_prefix: str = "kombu:"

    def queue_stream(self, queue: str, step: int = 0) -> str:
        """Return the stream that contains the messages of ``queue`` at ``step``."""
        if step == 0:
            return f"{self.prefix}{{{queue}}}"
        return f"{self.prefix}{{{queue}}}:{step}"

    def queue_streams(self, queue: str, steps: Sequence[int]) -> list[str]:
        """Return the streams of ``queue``, one per priority step, in step order."""
        return [self.queue_stream(queue, step) for step in steps]

    def dead_letter_stream(self, queue: str) -> str:
        """Return the stream where entries of ``queue`` are set aside."""
        return f"{self.prefix}{{{queue}}}:dead"

    def fanout_stream(self, exchange: str) -> str:
        """Return the stream that contains the messages of a fanout exchange."""
        return f"{self.prefix}{NAMESPACE}.fanout.{{{exchange}}}"

    def exchange_of_fanout_stream(self, stream: str) -> str:
        """Return the exchange whose fanout stream is ``stream``."""
        head = f"{self.prefix}{NAMESPACE}.fanout.{{"
        return stream[len(head) : -1]

    def bindings(self, exchange: str) -> str:
        """Return the set of bindings of ``exchange``."""
        return f"{self.prefix}{NAMESPACE}.binding.{exchange}"

    @property
    def exchange_types(self) -> str:
        """The hash that maps exchange names to their types."""
        return f"{self.prefix}{NAMESPACE}.exchanges"

    @property
    def queue_expires(self) -> str:
        """The hash that maps queue names to their x-expires in ms."""
        return f"{self.prefix}{NAMESPACE}.expires"

    @property
    def routing_version(self) -> str:
        """The token that every routing change replaces."""
        return f"{self.prefix}{NAMESPACE}.routing_version"

    def group(self, queue: str) -> str:
        """Return the consumer group through which ``queue`` reads its streams."""
        return f"{self.group_prefix}{queue}"

    def queue_of_group(self, group: str) -> str | None:
        """Return the queue that owns ``group``, or None for a foreign group."""
        if not group.startswith(self.group_prefix):
            return None
        return group[len(self.group_prefix) :]


def clamp_priority(value: object, min_priority: int = 0, max_priority: int = 9) -> int:
    """Clamp a message priority to 0..9 the way kombu does; junk becomes 0."""
    try:
        priority: int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return min_priority
    return max(min(priority, max_priority), min_priority)


def priority_step(priority: int, steps: Sequence[int]) -> int:
    """Map a clamped priority to the largest step that does not exceed it.

    With the default steps ``[0, 3, 6, 9]`` that is 0-2 to 0, 3-5 to 3, 6-8 to 6
    and 9 to 9, the same buckets as kombu's redis transport. A priority below
    the first step goes to the first step.
    """
    index = bisect(steps, priority) - 1
    return steps[max(index, 0)]
