"""What the UI test drives: a `dagster dev` server on the example, and Debian's headless Chromium.

The server runs in its own process group with a temporary DAGSTER_HOME and is stopped with all its children
(webserver, daemon, code server, run workers), even when the test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, sync_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# The launch flags the project's issue asks for; --headless is playwright's own `headless=True`.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 180
SHUTDOWN_SECONDS = 30
LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def free_port() -> int:
    """A localhost TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_example_warehouse(duckdb_path: Path, work_dir: Path) -> None:
    """`dbt build` of the example's models into `duckdb_path`, with dbt's target and logs kept in `work_dir`."""
    project = REPO_ROOT / "example_repo" / "dbt_project"
    subprocess.run(
        [
            str(Path(sys.executable).with_name("dbt")), "build", "--quiet",
            "--project-dir", str(project), "--profiles-dir", str(project),
            "--target-path", str(work_dir / "dbt_target"), "--log-path", str(work_dir / "dbt_logs"),
        ],
        check=True,
        env={**os.environ, "EXAMPLE_DUCKDB_PATH": str(duckdb_path), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        timeout=300,
    )


class DagsterDev:
    """`dagster dev -w workspace.yaml` on a free localhost port; `url` is the UI's address."""

    def __init__(self, env: Mapping[str, str], dagster_home: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env, "DAGSTER_HOME": str(dagster_home)}
        self._log_path = log_path
        dagster_home.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until the example's code location has loaded."""
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml",
                 "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=REPO_ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait_until_loaded()

    def _wait_until_loaded(self) -> None:
        deadline = time.monotonic() + SERVER_START_SECONDS
        problem = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"`dagster dev` exited with {self._process.returncode}: {self.log_tail()}")
            try:
                answer = httpx.post(f"{self.url}/graphql", json={"query": LOCATION_QUERY}, timeout=10).json()
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
            except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries
                              if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        raise RuntimeError(f"The example's code location failed to load: {errors[0]['message']}")
                    return
                problem = f"code locations still loading: {entries}"
            time.sleep(1)
        raise TimeoutError(
            f"`dagster dev` did not load the example within {SERVER_START_SECONDS}s ({problem}): {self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output, to explain a failure."""
        return self._log_path.read_text(errors="replace")[-chars:] if self._log_path.exists() else ""

    def stop(self) -> None:
        """Ask `dagster dev` to shut down its children, then kill whatever is left in its process group."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


@contextmanager
def dagster_dev(env: Mapping[str, str], dagster_home: Path, log_path: Path) -> Iterator[DagsterDev]:
    """A running `dagster dev` on the example, stopped with all its children on exit."""
    server = DagsterDev(env, dagster_home, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def chromium(user_data_dir: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile; playwright drives it (its wheel brings the driver)."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
