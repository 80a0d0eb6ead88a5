"""This machine's network as the tests see it: free loopback ports, `*.localhost` names, and
which process listens where.

Importing this module makes every `*.localhost` name resolve to 127.0.0.1 in this process:
the embedded default puts each user's server on `<user>.localhost`, as browsers resolve it
(RFC 6761), and the tests' own clients must reach it the same way.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil

from glue.core.ports import reserve

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Every `*.localhost` name is this machine, as browsers resolve it (RFC 6761); this
    machine's resolver (glibc, /etc/hosts) knows only `localhost`. The tests' own clients
    (requests, aiohttp, urllib) reach users' servers on their own domains this way."""
    if isinstance(host, str) and host.rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    return _system_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def free_port() -> int:
    """A loopback port for a process a test starts, chosen as the embedded default chooses
    its own (glue.core.ports): outside the kernel's ephemeral range, so that no outgoing
    connection and no other worker's bind(0) takes it before that process binds it."""
    return reserve()


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port, if any."""
    for connection in psutil.net_connections(kind="inet"):
        address = connection.laddr  # an empty tuple for a socket without an address
        if connection.status == psutil.CONN_LISTEN and address and address[1] == port:
            return connection.pid
    return None
