"""The loopback sockets the local spawner binds and holds for the processes it starts: a
server's notebook server and its session's git component.

The sandbox shares the machine's network, and every session runs code we do not trust.
A port chosen free and bound later by the process it was chosen for can be taken in
between by another user's session; one freed by a process that died can be taken before
the hub's poll removes its route. The proxy would then send that user's requests, on that
user's own origin, to the squatter, and the session would push its work, with its secret,
to it. So the spawner binds and listens on the port itself, passes the listening socket
to the process (an inherited file descriptor, contracts.LISTEN_FD_ENV), and closes its own
copy only once the server is stopped, after the hub has removed its route. While a
socket listens there, no other process can bind the port (ours is bound without
SO_REUSEPORT, so no other socket can share it).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from pathlib import Path
from subprocess import Popen

from glue.core.contracts import LISTEN_FD_ENV

BACKLOG = 128
POLL_SECONDS = 0.1
ANSWER_SECONDS = 1.0
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


class PortTaken(RuntimeError):
    """Another process holds the port a server must have: the launch fails closed."""


def hold(port: int = 0) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` (0: a free one the kernel picks), for a
    process to inherit. PortTaken when another process holds `port`."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as tornado's and aiohttp's listeners: connections of an earlier server closing down
    # do not hold the port, a listener does
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        held.bind(("127.0.0.1", port))
        held.listen(BACKLOG)
    except OSError as e:
        held.close()
        raise PortTaken(
            f"Another process holds port {port} on 127.0.0.1, which the notebook server was "
            f"given ({e.strerror}): the launch was stopped rather than route anything to it."
        ) from None
    return held


async def answers(port: int, seconds: float) -> bool:
    """Whether whatever accepts on 127.0.0.1:`port` answers an HTTP request within
    `seconds` (on a held socket the kernel accepts the connection before the process does)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), seconds
        )
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        return bool(await asyncio.wait_for(reader.read(1), seconds))
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def wait_serving(port: int, process: Popen[bytes], what: str, seconds: float) -> None:
    """Until `process` serves on the socket it inherited; RuntimeError when it ends first
    or `seconds` pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what[:1].upper()}{what[1:]} ended as it started.")
        if await answers(port, ANSWER_SECONDS):
            return
        await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"{what[:1].upper()}{what[1:]} did not answer in time.")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (any thread's children), as far as they can be read: a
    server's sandbox (bubblewrap closes the fds it inherits; the server inside keeps its)."""
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


def ours(pid: int) -> bool:
    """Whether process `pid` runs as the hub's user (a session's runs as its own uid)."""
    try:
        return Path(f"/proc/{pid}").stat().st_uid == os.getuid()
    except OSError:
        return False


def take_back(pids: list[int], port: int) -> socket.socket | None:
    """For a restarted hub: a copy of the listening socket on 127.0.0.1:`port` that one of
    `pids` (a server's sandbox and what runs in it, a git component) inherited from the hub
    before it, taken with pidfd_getfd (Linux 5.6; the hub runs as root or as their user),
    so that the port is held again until the server is stopped. None when none of them
    holds such a socket any more, or the kernel refuses: the port is then as they keep it."""
    for pid in pids:
        held = _copy(pid, port)
        if held is not None:
            return held
    return None


def _copy(pid: int, port: int) -> socket.socket | None:
    """The socket `pid` was passed (LISTEN_FD_ENV in its environment), if it is still a
    listener on 127.0.0.1:`port`: whatever else that fd number holds now is not taken."""
    prefix = LISTEN_FD_ENV.encode() + b"="
    try:
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        fd = int(next(e[len(prefix) :] for e in entries if e.startswith(prefix)))
        pidfd = os.pidfd_open(pid)
    except (OSError, StopIteration, ValueError):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copy < 0:
        return None
    held = socket.socket(fileno=copy)
    try:
        listening = (
            held.family == socket.AF_INET
            and held.type == socket.SOCK_STREAM
            and held.getsockname() == ("127.0.0.1", port)
            and held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        )
    except OSError:
        listening = False
    if not listening:
        held.close()
        return None
    return held
