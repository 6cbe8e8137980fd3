"""The message class of the channel: kombu's, plus undecodable bodies set aside."""

from __future__ import annotations

from typing import Any

from kombu.transport import virtual


class Message(virtual.Message):
    """A kombu message whose undecodable body goes to the dead-letter stream.

    A body that its content type cannot decode will fail the same way on
    every delivery, so it is moved to the queue's dead-letter stream with the
    reason, and the error is raised as before. Consumers that handle decode
    errors themselves (Celery acks or rejects the message) keep working, as
    settling a message that was set aside does nothing.
    """

    def _decode(self) -> Any:
        try:
            return super()._decode()
        except Exception as exc:
            channel = self.channel
            if channel is not None and hasattr(channel, "dead_letter_delivered"):
                channel.dead_letter_delivered(
                    self.delivery_tag,
                    f"the body cannot be decoded as {self.content_type!r} ({exc})",
                )
            raise
