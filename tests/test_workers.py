"""``mfa serve --workers N``: the workers share the load."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections import Counter
from contextlib import ExitStack
from urllib.parse import urlsplit

import httpx2 as httpx

from .live import serve

CONNECTIONS = 64


def _listening(base: str, *, without: int | None = None) -> int:
    """The port, once two workers listen on it, each on a socket of its own (and neither is
    the process ``without``); the parent holds none."""
    port = urlsplit(base).port
    assert port is not None
    # Ready once the first worker answers; the second may take a moment more to listen.
    deadline = time.monotonic() + 30
    while True:
        owners = _owners(_sockets(port, LISTEN))
        if (len(owners) == 2 and without not in owners) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(owners) == 2, owners
    assert without not in owners
    assert set(owners.values()) == {1}, owners
    return port


ESTABLISHED, LISTEN = "01", "0A"  # /proc/net/tcp's states


def _sockets(port: int, state: str) -> set[str]:
    """The inodes of the TCP sockets on local ``port`` in ``state`` (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _owners(inodes: set[str]) -> Counter[int]:
    """How many of these sockets each process holds."""
    owners: Counter[int] = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # gone, or not ours to look at
        for link in links:
            found = re.fullmatch(r"socket:\[(\d+)\]", link)
            if found and found.group(1) in inodes:
                owners[int(pid)] += 1
    return owners


def test_a_burst_of_connections_is_spread_over_the_workers(env):
    """A load balancer or a load generator opens its connections at once. With one socket that
    all workers accept from, the first worker to wake took nearly all of them and served them
    on one core while the other idled: each worker now listens on a socket of its own
    (SO_REUSEPORT), and the kernel spreads the connections over them."""
    with serve(env, workers=2) as base, ExitStack() as stack:
        address = urlsplit(base)
        port = _listening(base)
        clients = [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(CONNECTIONS)
        ]
        request = f"GET /healthz HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode()
        for client in clients:
            client.sendall(request)
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        owners = _owners(_sockets(port, ESTABLISHED))
    assert len(owners) == 2, owners
    assert sum(owners.values()) == CONNECTIONS
    # Spread by a hash of each connection's addresses: 32 each on average, and fewer than 16
    # on one worker about once in 10,000 runs.
    assert min(owners.values()) >= CONNECTIONS // 4, owners


def test_a_worker_that_dies_is_replaced_with_a_socket_of_its_own(env):
    with serve(env, workers=2) as base:
        port = _listening(base)
        victim = min(_owners(_sockets(port, LISTEN)))
        os.kill(victim, signal.SIGKILL)
        _listening(base, without=victim)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
