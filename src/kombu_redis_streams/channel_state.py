"""The attributes every part of the channel shares, declared for type checkers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections import deque

    import redis

    from .acks import AckBuffer
    from .fastpath import ScriptRunner
    from .keys import KeySpace
    from .options import TransportOptions
    from .plan import Delivery, Entry
    from .scripts import Scripts
    from .transport import Transport


class ChannelState:
    """Base of the channel's mixins; ``Channel.__init__`` sets these attributes."""

    connection: Transport
    options: TransportOptions
    keys: KeySpace
    client: redis.Redis
    scripts: Scripts
    runner: ScriptRunner
    consumer_name: str
    _acks: AckBuffer
    _buffer: deque[Entry]
    _deliveries: dict[Any, Delivery]
