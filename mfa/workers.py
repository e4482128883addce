"""``mfa serve --workers N``: uvicorn's supervisor, with a listening socket for each worker.

uvicorn binds one socket in the parent and every worker accepts from it. The event loop
accepts all the connections waiting when it wakes, so the first worker to wake took a whole
burst of them (a load balancer's pool, a load generator's connections): 64 of 64 in most
tries, served on one core while the other idled. Here each worker gets a socket of its own
bound to the same address with ``SO_REUSEPORT``, and the kernel spreads new connections over
the listening ones by a hash of their addresses (Linux; the kernel admits to a port's group
only sockets of the same user).

The parent keeps no socket: each is handed to the worker it was made for as that worker starts
(its descriptor passes at exec), and closes with it, so a worker that dies takes its queue out
of the group and its replacement gets a new socket.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


def run(config: Config) -> None:
    """Run ``config.workers`` workers until a signal stops them (as ``uvicorn.run`` would)."""
    sockets = _Listeners(config.host, config.port)
    try:
        sockets.check()
    except OSError as e:
        print(f"mfa: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    _Supervisor(config, sockets).run()


class _Listeners:
    """A new listening socket for each worker that starts."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.handed_out: list[socket.socket] = []

    def check(self) -> None:
        """Fail now, not in every worker, if the address is taken (or wrong). Port 0 becomes
        the port the system picks, shared by all the workers."""
        with self.bind() as probe:
            self.port = probe.getsockname()[1]

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def next(self) -> list[socket.socket]:
        sock = self.bind()
        self.handed_out.append(sock)
        return [sock]

    def close_handed_out(self) -> None:
        """The parent's copies, once their workers have started: each worker has its own."""
        for sock in self.handed_out:
            sock.close()
        self.handed_out.clear()


class _Supervisor(Multiprocess):
    """``Multiprocess``, whose every new worker (at start, after a crash, on SIGHUP or SIGTTIN)
    reads ``self.sockets`` once as it is made, and is started right after."""

    def __init__(self, config: Config, listeners: _Listeners) -> None:
        self._listeners = listeners
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        return self._listeners.next()

    @sockets.setter
    def sockets(self, _value: Any) -> None:
        pass  # Multiprocess.__init__ sets it; each worker gets its own instead

    def init_processes(self) -> None:
        super().init_processes()
        self._listeners.close_handed_out()

    def restart_all(self) -> None:
        try:
            super().restart_all()
        finally:
            self._listeners.close_handed_out()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._listeners.close_handed_out()

    def handle_ttin(self) -> None:
        super().handle_ttin()
        self._listeners.close_handed_out()
