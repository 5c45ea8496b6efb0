"""What the benchmarks share: an emulator in its own process, and timing a command as a whole process.

The emulator runs as a separate process so that its work never shares a Python interpreter (and
its GIL) with the client being measured.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

_READY_PREFIX = "dagster-cdp emulator listening on "


def _emulator_command() -> str:
    beside_python = Path(sys.executable).parent / "dagster-cdp"
    found = str(beside_python) if beside_python.exists() else shutil.which("dagster-cdp")
    if found is None:
        raise RuntimeError(
            "the `dagster-cdp` command was not found next to this Python or on PATH: "
            "install the repo into this environment (pip install -e .)"
        )
    return found


class EmulatorProcess:
    """`dagster-cdp emulator --count-only` as a subprocess, with its /admin endpoints."""

    def __init__(self, api_key: str, *, count_only: bool = True) -> None:
        self.api_key = api_key
        self.count_only = count_only
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        command = [_emulator_command(), "emulator", "--port", "0", "--api-key", self.api_key]
        if self.count_only:
            command.append("--count-only")
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith(_READY_PREFIX):
            self._process.kill()
            raise RuntimeError(f"the emulator did not start (it printed {line!r}); run `dagster-cdp emulator` to see why")
        self.url = line.removeprefix(_READY_PREFIX)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/admin/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/admin/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@dataclass
class TimedRun:
    """A finished command: wall time from start to exit, its own peak RSS, exit code and output."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str


def run_timed(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> TimedRun:
    """Run `command` to completion, timing the whole process (interpreter start and imports included).

    `os.wait4` gives the resource usage of that one child, so the peak RSS is its own and not the
    largest of every child so far (as `RUSAGE_CHILDREN` would be). Linux counts the peak of the
    forked copy of this process too, so the caller must stay smaller than what it measures.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        stdout.seek(0)
        stderr.seek(0)
        return TimedRun(seconds, usage.ru_maxrss * 1024, process.returncode, stdout.read(), stderr.read())


def sync_once(args: list[str]) -> None:
    """One step of bench/sync_once.py (`prepare`, `change`) as its own process; exits naming the step if it failed."""
    done = run_timed([sys.executable, str(Path(__file__).with_name("sync_once.py")), *args])
    if done.returncode != 0:
        raise SystemExit(f"sync_once.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")


@contextmanager
def fakesnow_server(repo: Path) -> Iterator[str]:
    """The local Snowflake the tests use (scripts/fakesnow_server.py from .venv-fakesnow, built by scripts/setup) on a
    free port, for as long as the block runs; yields the `snowflake://` URL of its database `bench`."""
    python = repo / ".venv-fakesnow" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: run `bash scripts/setup` to build the local Snowflake's venv")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([str(python), str(repo / "scripts" / "fakesnow_server.py"), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fakesnow server did not start: run scripts/fakesnow_server.py to see why")
                time.sleep(0.1)
        yield f"snowflake://bench:bench@fakesnow/bench/public?host=127.0.0.1&port={port}&protocol=http"
    finally:
        process.terminate()
        process.wait()
