"""Loopback ports for the processes the embedded default starts that bind their own: the
hub, the proxy's API and the glue (glue.embedded.dev; the tests' hubs too).

Such a process binds its port a second or more after the port was chosen. A port from
bind(0) comes from the kernel's ephemeral range, which every other bind(0) and every
outgoing connection on the machine draw from meanwhile: under a loaded test run, a proxy
found its port taken that way. So the port is drawn at random from outside that range
(`ip_local_port_range`, where the kernel hands out nothing by itself), is free when drawn,
and is claimed for RESERVED_SECONDS: in this process, and among all of ours on the machine
(one file per port in REGISTRY, created exclusively), so that two instances side by side,
or a test run's hubs, never draw the same one. (A user's server and its git component need
none of this: the hub binds and holds their sockets itself, glue.hub.listeners.)
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

LOWEST = 10000  # below: the ports of services a machine is configured with
HIGHEST = 65535
LINUX_EPHEMERAL = (32768, 60999)  # the kernel's default, when /proc cannot be read
# longer than any process we start takes to bind its port (the hub's start timeout)
RESERVED_SECONDS = 900.0
DRAWS = 500
# this user's claims, machine-wide: a file per port, its mtime the claim's time
REGISTRY = Path(tempfile.gettempdir()) / f"renku-notebooks-ports-{os.getuid()}"
SWEEP_SECONDS = 60.0

_handed_out: dict[int, float] = {}
_lock = threading.Lock()
_random = random.SystemRandom()  # not guessable by a session waiting to squat one
_swept = [0.0]


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


def _registry() -> Path | None:
    """REGISTRY, when it is this user's own directory, closed to others (None: claims are
    then this process's only; a directory another user made there cannot block ours)."""
    with contextlib.suppress(FileExistsError):
        REGISTRY.mkdir(mode=0o700)
    try:
        info = REGISTRY.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return REGISTRY


def _sweep(registry: Path, now: float) -> None:
    """Remove the claims older than RESERVED_SECONDS (at most once a SWEEP_SECONDS)."""
    if now - _swept[0] < SWEEP_SECONDS:
        return
    _swept[0] = now
    for claim in registry.iterdir():
        with contextlib.suppress(OSError):
            if now - claim.stat().st_mtime > RESERVED_SECONDS:
                claim.unlink()


def _claim(registry: Path | None, port: int, now: float) -> bool:
    """Claim `port` among our processes: False when another one claimed it lately."""
    if registry is None:
        return True
    path = registry / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                if now - path.stat().st_mtime <= RESERVED_SECONDS:
                    return False
                path.unlink()  # a stale claim: taken over
            except FileNotFoundError:
                pass
        except OSError:
            return True  # a registry we cannot write: this process's claims only
    return False


def reserve(host: str = "127.0.0.1") -> int:
    """A free port on `host` that no process of ours claimed in RESERVED_SECONDS."""
    ranges = pool()
    sizes = [len(r) for r in ranges]
    registry = _registry()
    with _lock:
        now = time.monotonic()
        for port, when in list(_handed_out.items()):
            if now - when > RESERVED_SECONDS:
                del _handed_out[port]
        if registry is not None:
            _sweep(registry, time.time())
        for _ in range(DRAWS):
            port = _random.choice(_random.choices(ranges, weights=sizes)[0])
            if port in _handed_out or not free(port, host):
                continue
            if not _claim(registry, port, time.time()):
                continue
            _handed_out[port] = now
            return port
    raise OSError(f"No free port on {host} outside the kernel's ephemeral range.")
