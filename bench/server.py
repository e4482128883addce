"""``mfa serve`` as an operator starts it, on a free loopback port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from . import settings

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mfa_binary() -> str:
    """The ``mfa`` console script of the venv running the bench."""
    candidate = Path(sys.executable).parent / "mfa"
    if not candidate.exists():
        raise RuntimeError(f"{candidate} is missing: run scripts/setup test first")
    return str(candidate)


@contextmanager
def serving(env: Mapping[str, str], port: int, log: Path) -> Iterator[str]:
    """Run ``mfa serve --workers N --port port`` until the block ends; yield its base URL."""
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603  (our own venv's mfa, fixed arguments)
            [mfa_binary(), "serve", "--workers", str(settings.WORKERS), "--port", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(base, proc, log)
            yield base
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mfa serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"mfa serve was not ready within {READY_TIMEOUT_S} s")
