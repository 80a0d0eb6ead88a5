"""Who listens on a server's loopback port: the local spawner's guard against a squatter.

The local spawner chooses a free port (glue.core.ports) and only then starts the
notebook server or the session's git component on it; the sandbox shares the host's
network. Between the two, any process (another user's session code binding loopback
ports in a loop) may take the port. The hub would then route the user's URL, on the
user's own origin, to that process (it waits for "any HTTP answer"), and the session
would push the user's work to it. So nothing is declared started until the socket
listening on 127.0.0.1:<port> belongs to the process we started or its descendants
(for a server in bubblewrap: the sandbox's bwrap process and everything in it).

Read from /proc only (the hub side has no psutil): the listening sockets' inodes
from /proc/net/tcp and tcp6, the process tree from /proc/<pid>/task/*/children, the
tree's sockets from /proc/<pid>/fd. A process we cannot read counts as not ours.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from subprocess import Popen

LISTEN = "0A"  # the TCP state in /proc/net/tcp
POLL_SECONDS = 0.1
PORT_ATTEMPTS = 3  # a squatter's port, then two more: a fourth would only wait longer
# the addresses whose listener a connection to 127.0.0.1 reaches
IPV4_REACHED = {ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address(0)}  # 0: any


class PortTaken(RuntimeError):
    """Another process listens on the port we gave our own: the launch must fail closed."""


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp's hex address: 32-bit words in the host's (little-endian) order."""
    raw = bytes.fromhex(text)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def _reaches_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # a dual-stack `::` listener takes IPv4 connections too (V6ONLY is not shown here)
        return address == ipaddress.IPv6Address("::") or address.ipv4_mapped in IPV4_REACHED
    return address in IPV4_REACHED


def listening_inodes(port: int) -> set[int]:
    """The inodes of the sockets listening where a connection to 127.0.0.1:`port` lands."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 here
        for line in lines:
            fields = line.split()
            host, _, hex_port = fields[1].partition(":")
            if fields[3] != LISTEN or int(hex_port, 16) != port:
                continue
            if _reaches_loopback(_address(host)):
                found.add(int(fields[9]))
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (any thread's children), as far as they can be read."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue  # ended meanwhile
    return tree


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of the sockets these processes hold open."""
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # ended, or not ours to read: its sockets do not count as ours
        for fd in fds:
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[len("socket:[") : -1]))
    return found


def owner_of(port: int, pid: int) -> bool | None:
    """None while nothing listens on 127.0.0.1:`port`; True when every listener there is
    `pid`'s or a descendant's; False when any other process listens there."""
    listening = listening_inodes(port)
    if not listening:
        return None
    return listening <= socket_inodes(process_tree(pid))


def accepting(port: int) -> bool:
    """Whether a connection to 127.0.0.1:`port` is accepted (closed at once, nothing sent)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def wait_own_listener(
    port: int, process: Popen[bytes], what: str, seconds: float | None = None
) -> None:
    """Until `process` (or a descendant) listens on 127.0.0.1:`port`.

    PortTaken when another process listens there: whoever started `process` must stop it
    and declare nothing started. RuntimeError when `process` ends first or `seconds` pass
    (None: until the caller is cancelled, as the hub's start timeout does).
    """
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while deadline is None or loop.time() < deadline:
        # /proc/net/tcp lists every socket of the machine: read it only once something
        # accepts connections there (fifty servers starting at once polled it into minutes
        # of the kernel's time)
        accepts = await asyncio.to_thread(accepting, port)
        owned = await asyncio.to_thread(owner_of, port, process.pid) if accepts else None
        if owned is False:
            raise PortTaken(
                f"Another process took port {port} on 127.0.0.1, which {what} was given, "
                "before it could listen there: the launch was stopped rather than route "
                "anything to that process."
            )
        if owned:
            return
        if process.poll() is not None:
            raise RuntimeError(f"{what[:1].upper()}{what[1:]} ended as it started.")
        await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"{what[:1].upper()}{what[1:]} did not listen in time.")


async def start_on_own_port(
    start: Callable[[int], Popen[bytes]],
    stop: Callable[[], Awaitable[None]],
    choose: Callable[[], int],
    what: str,
    *,
    attempts: int = PORT_ATTEMPTS,
    seconds: float | None = None,
    log: logging.Logger,
) -> None:
    """`start` a process on a port from `choose`, and wait until it listens there itself
    (wait_own_listener). When another process took that port first, ours is stopped and
    started again on a new one, `attempts` times in all: a port is only known free when it
    is chosen, and a session's code may squat one. The last PortTaken, and any other
    failure, is raised for the caller to stop ours and fail closed."""
    for attempt in range(1, attempts + 1):
        port = choose()
        process = start(port)
        try:
            await wait_own_listener(port, process, what, seconds)
            return
        except PortTaken as e:
            if attempt == attempts:
                raise
            log.warning("%s Starting it again on another port (attempt %d).", e, attempt + 1)
            await stop()
