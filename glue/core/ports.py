"""Loopback ports for the processes we start, chosen where nothing else is handed ports.

A process we start binds its port seconds after the port was chosen (a notebook server
imports for seconds; fifty of them at once, for minutes). A port from bind(0) comes from
the kernel's ephemeral range, which every other bind(0) and every outgoing connection on
the machine draw from meanwhile: fifty servers starting at once were given one another's
freed ports that way, and their launches failed. So the port is drawn at random from
outside that range (`ip_local_port_range`, where the kernel hands out nothing by itself),
is never one this process handed out in the last RESERVED_SECONDS, and is free when drawn.
What another process still does in between is caught where ours is started
(glue.hub.listeners.start_on_own_port).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

LOWEST = 10000  # below: the ports of services a machine is configured with
HIGHEST = 65535
LINUX_EPHEMERAL = (32768, 60999)  # the kernel's default, when /proc cannot be read
# longer than any process we start takes to bind its port (the hub's start timeout)
RESERVED_SECONDS = 900.0
DRAWS = 500

_handed_out: dict[int, float] = {}
_lock = threading.Lock()
_random = random.SystemRandom()  # not guessable by a session waiting to squat one


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to bind(0) and outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return LINUX_EPHEMERAL


def pool() -> list[range]:
    """The ports we draw from: above LOWEST, outside the ephemeral range (all above LOWEST
    on a machine whose ephemeral range leaves none)."""
    low, high = ephemeral_range()
    ranges = (range(LOWEST, min(low, HIGHEST + 1)), range(max(high + 1, LOWEST), HIGHEST + 1))
    return [r for r in ranges if len(r)] or [range(LOWEST, HIGHEST + 1)]


def free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing holds `port` now: bound without SO_REUSEADDR, so that a listener on
    any address and a connection closing down there both count as holding it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve(host: str = "127.0.0.1") -> int:
    """A free port on `host` that this process has not handed out in RESERVED_SECONDS."""
    ranges = pool()
    sizes = [len(r) for r in ranges]
    with _lock:
        now = time.monotonic()
        for port, when in list(_handed_out.items()):
            if now - when > RESERVED_SECONDS:
                del _handed_out[port]
        for _ in range(DRAWS):
            port = _random.choice(_random.choices(ranges, weights=sizes)[0])
            if port not in _handed_out and free(port, host):
                _handed_out[port] = now
                return port
    raise OSError(f"No free port on {host} outside the kernel's ephemeral range.")
