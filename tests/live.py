"""Real server processes (``mfa serve``) for tests that need sockets, workers and concurrency."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(env: dict[str, str], *, workers: int = 1, log: Path | None = None) -> Iterator[str]:
    """Run ``mfa serve`` on a free port until the block ends; yield its base URL
    (``http://localhost:PORT``: WebAuthn refuses IP addresses)."""
    port = free_port()
    base = f"http://localhost:{port}"
    full_env = {**os.environ, "MFA_ORIGIN": base, **env}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfa", "serve", "--port", str(port), "--workers", str(workers)],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(base, proc)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mfa serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("mfa serve did not become ready in 30 s")
