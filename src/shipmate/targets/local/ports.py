"""Free TCP ports on the loopback interface for the local target's processes.

Called by the local addons (and anything else of the local target that needs a private port) before
it starts a server. Ports come from the kernel's ephemeral range (binding port 0), so they never fall
on a standard service port (5432, 6379, 4222, 3306, 5672, 9090...) where the machine's own shared
services live. A port is remembered for the life of this process so that two callers asking in quick
succession, before either has bound it, never get the same one.

This module must not start processes or keep sockets open: it only asks the kernel.
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on `host:port` and it can be bound right now."""
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: connections of a stopped server left in TIME_WAIT do not
        # keep its port from being listened on again, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK, *, prefer: int | None = None) -> int:
    """A port on `host` that is free now: `prefer` when it still is (a port kept across restarts),
    else a new one from the ephemeral range that this process has not handed out before."""
    with _lock:
        if prefer is not None and is_free(prefer, host):
            _handed_out.add(prefer)
            return prefer
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError(f"no free TCP port on {host} after 100 tries")
