"""Lua scripts of the transport, loaded once per client and called by SHA."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script

#: Scripts that use the helpers of ``common.lua``.
_NEEDS_COMMON = {
    "fetch",
    "ack",
    "requeue",
    "dead_letter",
    "leave",
    "purge",
    "trim",
    "prune",
    "reclaim",
}

NAMES = (
    "fetch",
    "ack",
    "requeue",
    "dead_letter",
    "reclaim",
    "publish",
    "leave",
    "purge",
    "trim",
    "recover_own",
    "prune",
)


@cache
def source(name: str) -> str:
    """Return the Lua source of script ``name``, with its helpers in front."""
    folder = resources.files(__name__)
    text = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if name in _NEEDS_COMMON:
        text = (folder / "common.lua").read_text(encoding="utf-8") + "\n" + text
    return text


class Scripts:
    """The transport's scripts, registered with one redis-py client.

    redis-py's ``Script`` sends EVALSHA and loads the script on NOSCRIPT, so a
    server that restarted or ran SCRIPT FLUSH is served again transparently.
    """

    def __init__(self, client: Redis) -> None:
        for name in NAMES:
            script = client.register_script(source(name))
            setattr(self, name, script)
            # Loaded up front, so that NOSCRIPT only follows a server restart.
            client.script_load(script.script)

    fetch: Script
    ack: Script
    requeue: Script
    dead_letter: Script
    reclaim: Script
    publish: Script
    leave: Script
    purge: Script
    trim: Script
    recover_own: Script
    prune: Script
