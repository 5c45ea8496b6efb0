"""The `dagster-cdp` console command: the local emulator, and what operators ask of syncs (status, explain, plan).

Only the options are wired here; each command's work is in its own module, imported when the command runs (Dagster
only by the commands that read a defs.yaml).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

if TYPE_CHECKING:
    from dagster_cdp.dagster.defs_file import DefsFile

F = TypeVar("F", bound=Callable[..., Any])


class Rendered(Protocol):
    """A command's result: text for people, JSON for scripts."""

    def as_json(self) -> dict[str, Any]: ...

    def text(self) -> str: ...


@click.group(help="Tools of the dagster-cdp plugin.")
def cli() -> None:
    pass


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="dagster-cdp")


@cli.command(
    help="Run a local emulator of Customer.io's Pipelines API in the foreground until SIGINT/SIGTERM. "
    "Prints one line with its URL when ready.",
    short_help="Run a local emulator of Customer.io's Pipelines API until interrupted.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to bind; 0 picks a free one.")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY",
    help="Accept only these keys (repeatable). Without it, any non-empty key is accepted.",
)
@click.option("--count-only", is_flag=True, help="Count calls and bytes only: no state, no per-call validation.")
@click.option("--rate-limit", type=int, default=3000, show_default=True, help="Requests allowed per 3-second window.")
def emulator(host: str, port: int, api_keys: tuple[str, ...], count_only: bool, rate_limit: int) -> None:
    from dagster_cdp.emulator.server import Emulator

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emu = Emulator(api_keys=list(api_keys) or None, host=host, port=port, rate_limit=rate_limit, count_only=count_only)
    try:
        emu.start()
    except OSError as exc:
        raise SystemExit(
            f"dagster-cdp emulator cannot listen on {host}:{port} ({exc.strerror}); "
            "pick another --port (0 picks a free one)."
        ) from None
    try:
        print(f"dagster-cdp emulator listening on {emu.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        emu.stop()


def _warehouse_options(command: F) -> F:
    """--url, --state-url, --state-schema (as CustomerIOWarehouseResource has them) and --json."""
    for option in reversed(
        [
            click.option(
                "--url",
                envvar="WAREHOUSE_URL",
                show_envvar=True,
                help="SQLAlchemy URL of the warehouse, e.g. postgresql+psycopg://user@host/db.",
            ),
            click.option(
                "--state-url",
                help="SQLAlchemy URL of the database holding the sync state, when it is kept out of the warehouse "
                "(the warehouse resource's state_url).",
            ),
            click.option(
                "--state-schema", help="Schema of the state tables (state_schema); default: the connection's."
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text."),
        ]
    ):
        command = option(command)
    return command


@cli.command(
    short_help="Every sync's last run, live keys, pending acknowledgements, rejections and lock.",
    help="Every sync of the state tables: its last run and outcome, its keys live at the API, acknowledgements not "
    "folded into the state yet, rejected keys, and whether a run holds its lock now. "
    "Writes no data (probing a lock takes it for an instant).",
)
@_warehouse_options
def status(url: str | None, state_url: str | None, state_schema: str | None, as_json: bool) -> None:
    from dagster_cdp.sync.inspection import opened, read_status

    with _errors(), opened(_required(url, None), state_url, state_schema) as (_, store):
        _print(read_status(store), as_json)


@cli.command(
    short_help="What the state holds for one key, and what the next run would send for it and why.",
    help="What the state holds for one KEY of SYNC (the key as in the state table's `key` column), and with --defs "
    "the call the next run would send for it, and why. Sends and writes nothing.",
)
@click.argument("sync")
@click.argument("key")
@click.option(
    "--defs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The sync's defs.yaml (a CustomerIOSyncComponent), to plan the key as a run would.",
)
@_warehouse_options
def explain(
    sync: str,
    key: str,
    defs: Path | None,
    url: str | None,
    state_url: str | None,
    state_schema: str | None,
    as_json: bool,
) -> None:
    from dagster_cdp.sync.inspection import opened
    from dagster_cdp.sync.key_plan import explain_key

    with _errors():
        declared = _declared(defs, url) if defs else None
        with opened(*_warehouse(url, state_url, state_schema, declared)) as (engine, store):
            _print(explain_key(engine, store, sync, key, declared.syncs if declared else None, str(defs)), as_json)


@cli.command(
    short_help="A dry run of the syncs of a defs.yaml: what each would send now.",
    help="A dry run of the syncs a defs.yaml declares (every partition of a sync in partitions), without Dagster: "
    "what each would send now, rejections with their reasons, and sample calls. Sends nothing.",
)
@click.argument("defs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sync", "names", multiple=True, help="Plan only this sync (repeatable); default: every one.")
@_warehouse_options
def plan(
    defs: Path, names: tuple[str, ...], url: str | None, state_url: str | None, state_schema: str | None, as_json: bool
) -> None:
    from dagster_cdp.sync.planning import plan_syncs, selected

    with _errors():
        declared = _declared(defs, url)
        warehouse, state_url, state_schema = _warehouse(url, state_url, state_schema, declared)
        definitions = selected(declared.syncs, names, str(defs))
        _print(plan_syncs(definitions, warehouse=warehouse, state_url=state_url, state_schema=state_schema), as_json)


@contextmanager
def _errors() -> Iterator[None]:
    """Errors raised on purpose (each names the thing and the fix) as one line and exit code 1."""
    from dagster_cdp.errors import CdpError

    try:
        yield
    except CdpError as e:
        raise click.ClickException(" ".join(str(e).split())) from None


def _declared(defs: Path, url: str | None) -> DefsFile:
    from dagster_cdp.dagster.defs_file import read_defs_file

    return read_defs_file(defs, warehouse=url is None)


def _warehouse(
    url: str | None, state_url: str | None, state_schema: str | None, declared: DefsFile | None
) -> tuple[str, str | None, str | None]:
    """The warehouse and state given as options, else those of the defs.yaml's `warehouse:` block."""
    resource = declared.warehouse if declared and not url else None
    if resource is None:
        return _required(url, declared), state_url, state_schema
    return resource.url, state_url or resource.state_url, state_schema or resource.state_schema


def _required(url: str | None, declared: DefsFile | None) -> str:
    if url:
        return url
    block = f", or a `warehouse:` block in {declared.path}" if declared else ""
    raise click.ClickException(
        "No warehouse given: pass --url or set WAREHOUSE_URL to its SQLAlchemy URL (e.g. "
        f"postgresql+psycopg://user@host/db){block}."
    )


def _print(result: Rendered, as_json: bool) -> None:
    from dagster_cdp.encoding import dumps

    click.echo(dumps(result.as_json()).decode() if as_json else result.text())


if __name__ == "__main__":
    main()
