"""Loopback server processes for the MLflow tests: a free port, a bounded wait, and a kill by process group id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: The running interpreter's scripts folder (mlflow, uvicorn): the venv the tests run in.
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll `url` until it answers 200, the process dies, or `timeout` seconds pass (then fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(
    args: Sequence[str], ready_url: str, log: Path, env: dict[str, str], timeout: float = 180
) -> Iterator[subprocess.Popen]:
    """Run `args` in its own process group until the block ends; only that group is signalled."""
    with log.open("w") as out:
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # the server spawns uvicorn from the venv
        process = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": path, **env},
            start_new_session=True,
        )
    try:
        wait_until_up(ready_url, process, timeout, log)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
