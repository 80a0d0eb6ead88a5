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
socket listens there, no other process can bind the port (a session's SO_REUSEPORT would
need the hub's uid).
"""

from __future__ import annotations

import asyncio
import socket
from subprocess import Popen

BACKLOG = 128
POLL_SECONDS = 0.1
ANSWER_SECONDS = 1.0


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
