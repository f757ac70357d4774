"""Process plumbing shared by the devstack launchers (Kafka broker, PostgreSQL server, Zipkin)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """Return `count` distinct ports that were free on 127.0.0.1 a moment ago.

    All sockets stay bound until every port is chosen, so the kernel cannot hand out the
    same port twice; another process may still grab one before we use it, which is
    acceptable for local runs and tests.
    """
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def temp_dir_path(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{prefix}{secrets.token_hex(6)}"


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, whether or not a loop is running.

    asyncio.run refuses to nest inside a running loop (pytest-asyncio, uvicorn), so the
    coroutine always gets a fresh loop on a short-lived thread. The caller's loop is
    blocked meanwhile, which is fine for the start-up and admin calls this serves.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send `sig` to the child when we die.

    atexit does not run when the test runner is SIGKILLed (CI timeout, OOM killer), and a
    leftover broker holds ~400 MB. The kernel ties the signal to the parent *thread*, so it
    is only armed when starting from the main thread; a worker thread that exits would
    otherwise take the server down with it.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    signum = int(sig)

    # Resolved before fork: only a foreign call runs between fork and exec.
    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)

    return arm


def stop_process_group(
    proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float = 20.0
) -> None:
    """Send `sig` to the child's process group, then SIGKILL it if it outlives `grace`."""
    if proc.poll() is not None:
        return
    # The child leads its own session (start_new_session=True), so its pid is the group id
    # and the signal also reaches anything it forked.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class Launched:
    """A server process the devstack starts and stops (Kafka, PostgreSQL, Zipkin): usable
    as a context manager, and its failures say what the end of its log says."""

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _failure(self, reason: str) -> str:
        return f"{reason}; last lines of {self.log_path}:\n{log_tail(self.log_path)}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_signal(is_alive: Callable[[], bool]) -> int:
    """Block until SIGINT/SIGTERM (exit code 0) or until the server dies on its own (1)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(1.0):
        if not is_alive():
            return 1
    return 0
