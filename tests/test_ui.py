"""The Dagster UI path a new user takes: see the dbt models feed the syncs, materialize one, read what it did.

Runs `dagster dev` on the example (workspace.yaml) against the local emulator and drives it in Debian's headless
Chromium. The warehouse is built with the dbt CLI before the server starts, so the sync reads real tables while
Dagster has not recorded the dbt models yet (the UI asks to confirm, and the test confirms).

Screenshots of each step go to tests/artifacts/ui/; with CDP_UPDATE_DOCS_IMAGES=1 the asset graph and the sync's
metadata are also copied to docs/images/ for the README.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from dagster_cdp import Emulator, FaultConfig
from tests.ui_harness import CHROMIUM, REPO_ROOT, DagsterDev, build_example_warehouse, chromium, dagster_dev

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium`"
    ),
]

API_KEY = "cdp-ui-test-key-Zq81Wm4pXv"  # distinctive, so the page can be searched for it
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "ui"
DOCS_IMAGES = REPO_ROOT / "docs" / "images"
RUN_SECONDS = 180
# Dagster's own DAGSTER_HOME for the server: no telemetry, and each sync's pool admits one run at a time.
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


@dataclass
class ExampleUI:
    """The running example: the UI's address, the emulator standing in for Customer.io, the warehouse file."""

    server: DagsterDev
    emulator: Emulator
    warehouse: Path

    def people_rows(self) -> dict[str, dict]:
        """The warehouse's `people` table by user id, as the sync reads it."""
        with duckdb.connect(str(self.warehouse), read_only=True) as connection:
            cursor = connection.execute("select * from people order by user_id")
            columns = [d[0] for d in cursor.description]
            return {str(row[0]): dict(zip(columns, row)) for row in cursor.fetchall()}


@pytest.fixture(scope="module")
def example_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleUI]:
    work = tmp_path_factory.mktemp("ui")
    warehouse = work / "warehouse.duckdb"
    build_example_warehouse(warehouse, work)
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    with Emulator(api_keys={API_KEY}) as emulator:
        env = {
            "EXAMPLE_DUCKDB_PATH": str(warehouse),
            "WAREHOUSE_URL": "",  # empty: the example's default, the DuckDB file above
            "CDP_API_KEY": API_KEY,
            "CDP_REGION": "",
            "CDP_BASE_URL": emulator.url,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        with dagster_dev(env, home, work / "dagster_dev.log") as server:
            # The "Join the Dagster community" dialog would cover the page on localhost.
            httpx.post(f"{server.url}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30)
            yield ExampleUI(server, emulator, warehouse)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium_profile")) as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext, request: pytest.FixtureRequest, example_ui: ExampleUI) -> Iterator[Page]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    yield page
    # What the page showed at the end and the server's log so far, to explain a failure.
    page.screenshot(path=ARTIFACTS / f"{request.node.name}-last.png")
    (ARTIFACTS / f"{request.node.name}-dagster_dev.log").write_text(example_ui.server.log_tail(200_000))
    page.close()


def screenshot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path)
    return path


def publish_to_docs(path: Path, name: str) -> None:
    """Copies a screenshot to docs/images/ when CDP_UPDATE_DOCS_IMAGES=1 (the README shows those)."""
    if os.environ.get("CDP_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)


def open_expanded_asset_graph(page: Page, url: str) -> None:
    """The global asset lineage with every group unfolded, so dbt models and sync assets show side by side."""
    page.goto(f"{url}/asset-groups")
    page.get_by_text("customerio", exact=True).last.wait_for()
    page.wait_for_timeout(1000)  # the graph lays out after the group names appear
    unfold = page.locator('[aria-label="unfold_more"]')
    while unfold.count():
        unfold.first.click()
        page.wait_for_timeout(300)
    page.reload()  # a fresh layout fits the unfolded groups to the view
    page.wait_for_timeout(2000)
    while unfold.count():  # a larger graph comes back with a group folded again
        unfold.first.click()
        page.wait_for_timeout(300)
    page.get_by_text("cdp_people", exact=True).last.wait_for()
    page.wait_for_timeout(1500)


def confirm_if_asked(page: Page) -> None:
    """Dagster warns that the dbt models were never materialized in Dagster; the tables exist, so go ahead."""
    dialog_or_toast = page.get_by_text(re.compile(r"^(Are you sure\?|Launched run)"))
    dialog_or_toast.first.wait_for()
    if page.get_by_text("Are you sure?", exact=True).count():
        screenshot(page, "upstream-warning")
        page.get_by_role("button", name="Confirm", exact=True).click()


def open_launched_run(page: Page) -> str:
    """Follows the 'Launched run' toast to the run's page; returns the run's final status as the UI shows it."""
    page.get_by_text(re.compile(r"^Launched run")).wait_for()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/"))
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    status.first.wait_for(timeout=RUN_SECONDS * 1000)
    page.wait_for_timeout(1500)  # let the event log render its last events
    return status.first.inner_text()


def metadata_value(page: Page, key: str) -> str:
    """The value of `key` in the asset page's metadata table (the latest materialization's)."""
    row = page.locator("table tbody tr").filter(has=page.get_by_text(key, exact=True))
    return row.first.locator("td").nth(2).inner_text().strip()


def test_materialize_people_sync_from_the_ui(example_ui: ExampleUI, page: Page) -> None:
    url = example_ui.server.url
    example_ui.emulator.set_faults(FaultConfig())
    people = example_ui.people_rows()

    # The asset graph shows the dbt models and, downstream of them, one sync asset per model.
    open_expanded_asset_graph(page, url)
    for name in ("people", "accounts", "memberships", "cdp_people", "cdp_accounts", "cdp_memberships"):
        assert page.get_by_text(name, exact=True).count() >= 1, f"asset {name} is not on the asset graph"
    screenshot(page, "01-asset-graph")

    # Select cdp_people on the graph and materialize it.
    page.get_by_text("cdp_people", exact=True).last.click()
    page.get_by_role("button", name="Materialize selected").click()
    confirm_if_asked(page)
    status = open_launched_run(page)
    screenshot(page, "02-run")
    assert status == "Success", f"the cdp_people run ended in {status}; see {ARTIFACTS}"

    # The asset page: lineage from the dbt model, and the sync's counts in the metadata.
    page.goto(f"{url}/assets/cdp_people")
    page.get_by_text("inserted", exact=True).wait_for()
    # "Upstream assets" on the asset page links the dbt model the sync reads.
    expect(page.locator('a[href="/assets/people"]').first).to_be_attached()
    counts = {key: metadata_value(page, key) for key in ("inserted", "updated", "deleted", "rejected")}
    assert counts == {"inserted": str(len(people)), "updated": "0", "deleted": "0", "rejected": "0"}
    metadata_png = screenshot(page, "03-sync-metadata")

    # Customer.io (the emulator) now holds every person of the warehouse, with their traits.
    held = example_ui.emulator.snapshot()["people"]
    assert set(held) == set(people)
    for user_id, row in people.items():
        assert held[user_id]["traits"]["email"] == row["email"]
        assert held[user_id]["traits"]["plan"] == row["plan"]

    # The graph again, now with the sync materialized: the picture for the README.
    open_expanded_asset_graph(page, url)
    graph_png = screenshot(page, "04-asset-graph-after-sync")
    publish_to_docs(graph_png, "asset-graph.png")
    publish_to_docs(metadata_png, "sync-metadata.png")


def test_failing_sync_tells_what_to_do_without_showing_the_key(example_ui: ExampleUI, page: Page) -> None:
    url = example_ui.server.url
    # A change to send, whether or not the people were synced before.
    with duckdb.connect(str(example_ui.warehouse)) as connection:
        user_id = connection.execute("select min(user_id) from people").fetchone()[0]
        connection.execute("update people set plan = 'ui-test-plan' where user_id = ?", [user_id])
    example_ui.emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    try:
        page.goto(f"{url}/assets/cdp_people")
        page.locator("button").filter(has_text=re.compile(r"^Materialize$")).click()
        confirm_if_asked(page)
        status = open_launched_run(page)
    finally:
        example_ui.emulator.set_faults(FaultConfig())
    screenshot(page, "05-failed-run")
    assert status == "Failure", f"the cdp_people run against a failing API ended in {status}"

    # The run page says what went wrong (the API answered 503) and what to do (check the host, run again).
    text = page.locator("body").inner_text()
    assert "503" in text, "the failed run does not show the HTTP status the API answered"
    assert re.search(r"run (it )?again", text, re.IGNORECASE), "the failed run does not say what to do next"
    basic_credentials = base64.b64encode(f"{API_KEY}:".encode()).decode()
    for shown in (text, page.content()):
        assert API_KEY not in shown and basic_credentials not in shown, "the API key is on the run page"

    # The step's captured stderr shows the retries, and no key either.
    page.get_by_role("button", name=re.compile(r"stderr$")).click()
    page.get_by_role("combobox").click()
    page.get_by_role("menuitem", name="cdp_people").click()
    expect(page.locator("body")).to_contain_text("STEP_FAILURE")
    screenshot(page, "06-failed-run-stderr")
    stderr = page.locator("body").inner_text()
    assert "503" in stderr
    assert API_KEY not in stderr and API_KEY not in page.content(), "the API key is in the run's captured stderr"

    held = example_ui.emulator.snapshot()["people"].get(str(user_id))
    assert held is None or held["traits"]["plan"] != "ui-test-plan", "the emulator applied a call it answered 503 to"
