"""The UI as operators meet it, in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`, never a downloaded browser) on the session's UI stack (webserver, daemon, code server).

Each test opens one page, waits for what an operator would look for (elements, never fixed sleeps), saves a
full-page screenshot under `$INGESTION_TEST_ARTIFACTS/browser/` (default `.ci-artifacts/browser/`), and fails on
browser console errors, uncaught page errors, server errors answering the page, and every error display the
Dagster 1.13 UI has (found in its own sources, which dagster-webserver ships as source maps; see ERROR_DISPLAYS).
One browser serves the module; the data the pages show is made by this module (runs launched over GraphQL), not
left to the order in which other suites run.
"""

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from ingestion_platform.definitions import defs
from ingestion_platform_tests.e2e.stack import LOCATION, ROOT, UIStack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start. The rest keeps the browser off
# the network and away from anything but the page under test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("INGESTION_TEST_ARTIFACTS") or ROOT / ".ci-artifacts") / "browser"
VIEWPORT = ViewportSize(width=1600, height=1200)
# A loaded 2-core machine renders the asset graph slowly; every wait is on an element, bounded by this.
TIMEOUT_MS = 60_000
# The asset graph's zoom for the whole-graph view: above 0.6 the UI draws full nodes, whose names are not shortened
# (ui-core asset-graph MINIMAL_SCALE).
GRAPH_SCALE = 0.8
# The asset the partitions and run pages show: one day x tenant step each, cheap to run for both tenants.
ASSET = ("sftp", "users")
DEMO_TENANTS = ("acme", "globex")
# The UI shows the "Join the Dagster community" dialog over every page on localhost until it is dismissed, which it
# remembers in this localStorage key (ui-core CommunityNux.tsx); a fresh profile sets it rather than clicking.
DISMISS_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
# How the Dagster 1.13 UI displays a failure, as Playwright selectors (CSS-module class prefixes are stable, their
# hashes are not):
ERROR_DISPLAYS: dict[str, tuple[str, ...]] = {
    # PythonErrorInfo.tsx: a server-side Python error rendered in the page (e.g. a query that raised).
    "Python error": ('[class*="PythonErrorInfo_wrapper"]',),
    # Alert intent="error" (Alert.module.css): code location load errors and other error banners.
    "error banner": ('[class*="Alert_error"]',),
    # ErrorBoundary.tsx: a React render crash of a page region, "Sorry, <region> can't be displayed."
    "crashed region": ('[class*="ErrorBoundary_trace"]', "text=/Sorry, .* can.t be displayed/"),
    # AppError.tsx: every GraphQL error is a danger toast "Unexpected GraphQL error"; HTTP errors are danger toasts
    # too, and Toaster.tsx gives danger toasts the `error` icon.
    "error toast": (
        '[class*="Toaster_toastInner"]:has([role="img"][aria-label="error"])',
        "text=Unexpected GraphQL error",
    ),
    # pages/_error.tsx: Next.js's page for an uncaught client-side exception.
    "application error": ("text=Application error: a client-side exception has occurred",),
}


@dataclass
class Watch:
    """What went wrong in the browser while a page was open."""

    problems: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # Only errors: the UI's bundled Apollo Client logs warnings and a DevTools hint at `log` level on every
        # page, which are messages about the development tooling, not failures of the app.
        if message.type == "error":
            where = message.location
            self.problems.append(f"console error: {message.text} ({where.get('url')}:{where.get('lineNumber')})")

    def on_page_error(self, error: Exception) -> None:
        self.problems.append(f"uncaught page error: {error}")

    def on_response(self, response: Response) -> None:
        if response.status >= 500:
            self.problems.append(f"server error {response.status} for {response.request.method} {response.url}")


@dataclass
class UIPage:
    page: Page
    base_url: str
    watch: Watch

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base_url}{path}", wait_until="domcontentloaded")

    def check(self) -> None:
        """Fail on anything the browser or the UI reported as an error while the page was open."""
        shown = []
        for what, selectors in ERROR_DISPLAYS.items():
            for selector in selectors:
                found = self.page.locator(selector)
                if found.count():
                    shown.append(f"{what} shown: {found.first.inner_text()[:1000]!r}")
        problems = [*self.watch.problems, *shown]
        assert not problems, f"{self.page.url}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return defs()


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """One Chromium for the module, on a fresh profile (nothing remembered from an earlier session)."""
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `.ci/run` installs Debian's `chromium`"
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        context.add_init_script(DISMISS_COMMUNITY_DIALOG)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def ui(browser: BrowserContext, ui_stack: UIStack, request: pytest.FixtureRequest) -> Iterator[UIPage]:
    """A new page per test; its full-page screenshot is saved afterwards, whether the test passed or not."""
    page = browser.new_page()
    watch = Watch()
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    page.on("response", watch.on_response)
    try:
        yield UIPage(page, ui_stack.webserver_url, watch)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    finally:
        page.close()


@pytest.fixture(scope="module", autouse=True)
def launched(ui_stack: UIStack) -> dict[str, str]:
    """The asset's newest seeded day for both demo tenants, launched over GraphQL as the module starts (the runs go on
    while the first pages are checked): tenant -> run id."""
    assert set(DEMO_TENANTS) <= set(ui_stack.tenants)
    return {tenant: ui_stack.materialize([ASSET], partition=f"{ui_stack.days[-1]}|{tenant}") for tenant in DEMO_TENANTS}


@pytest.fixture(scope="module")
def materialized(ui_stack: UIStack, launched: dict[str, str]) -> dict[str, str]:
    """The launched runs, once every one of them succeeded."""
    for tenant, run_id in launched.items():
        status = ui_stack.wait_for_run(run_id, timeout=600)
        if status != "SUCCESS":
            messages = "\n".join(m["message"] for m in ui_stack.run_messages(run_id)[-30:])
            pytest.fail(f"{'/'.join(ASSET)} {ui_stack.days[-1]}|{tenant}: run {run_id} ended {status}\n{messages}")
    return launched


def test_global_asset_lineage_shows_every_asset(ui: UIPage, definitions: dg.Definitions) -> None:
    specs = list(definitions.resolve_all_asset_specs())
    groups = sorted({spec.group_name or "default" for spec in specs})
    expected = sorted(spec.key.path[-1] for spec in specs)
    assert {"ga4", "sftp", "netsuite"} <= set(groups)
    # Every group expanded (the URL state the UI itself writes when groups are opened).
    ui.open("/asset-groups?expanded=" + ",".join(f"global@global:{group}" for group in groups))
    viewport = ui.page.locator('[data-svg-viewport="1"]')
    names = viewport.locator('[class*="AssetNode_assetName"] [data-tooltip]')
    expect(names.first).to_be_visible()
    # The graph renders only the nodes inside its viewport, fitted to its width: grow the window until the whole
    # graph fits at a readable scale (full nodes with their names), then let the UI re-centre it (double-click).
    graph = viewport.locator("svg").first
    width, height = float(graph.get_attribute("width") or 0), float(graph.get_attribute("height") or 0)
    box = viewport.bounding_box()
    assert box and width and height
    ui.page.set_viewport_size(
        {
            "width": max(VIEWPORT["width"], math.ceil(VIEWPORT["width"] - box["width"] + width * GRAPH_SCALE)),
            "height": max(
                VIEWPORT["height"], math.ceil(VIEWPORT["height"] - box["height"] + height * GRAPH_SCALE + 80)
            ),
        }
    )
    viewport.dispatch_event("dblclick")
    expect(names).to_have_count(len(expected))
    assert sorted(names.evaluate_all("nodes => nodes.map(n => n.dataset.tooltip)")) == expected
    for group in groups:
        expect(viewport.get_by_text(group, exact=True).first).to_be_visible()
    # Live data arrived for every node (the nodes show "Loading..." until their status query answers).
    expect(viewport.get_by_text(re.compile(r"^Loading"))).to_have_count(0)
    ui.check()


@pytest.mark.parametrize("tenant", DEMO_TENANTS)
def test_partitions_page_shows_the_tenants_materialized_partition(
    ui: UIPage, ui_stack: UIStack, materialized: dict[str, str], tenant: str
) -> None:
    partition = f"{ui_stack.days[-1]}|{tenant}"
    ui.open(f"/assets/{'/'.join(ASSET)}?view=partitions&partition={partition}")
    page = ui.page
    # Both dimensions listed, our tenant among the tenant keys, and the partition's detail: materialized by a run.
    expect(page.get_by_text(partition, exact=True).first).to_be_visible()
    expect(page.get_by_text(str(ui_stack.days[-1]), exact=True).first).to_be_visible()
    for name in DEMO_TENANTS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Materialized \(\d+\)$"))).to_be_visible()
    expect(page.locator('[class*="BaseTag"]', has_text=re.compile(r"^Materialized$"))).to_be_visible()
    expect(page.get_by_text("Latest materialization", exact=True)).to_be_visible()
    expect(page.locator('a[href^="/runs/"]').first).to_be_visible()
    counts = page.get_by_text(re.compile(r"^Materialized \(\d+\)$")).inner_text()
    assert int(re.findall(r"\d+", counts)[0]) >= len(DEMO_TENANTS), counts
    ui.check()


def test_automation_page_lists_every_sensor_and_schedule(ui: UIPage, definitions: dg.Definitions) -> None:
    repository = definitions.get_repository_def()
    expected = {f"sensors/{s.name}" for s in repository.sensor_defs} | {
        f"schedules/{s.name}" for s in repository.schedule_defs
    }
    assert expected
    # The list renders only the rows in view: room for every row.
    ui.page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], 400 + 60 * len(expected))})
    ui.open("/automation")
    prefix = f"/locations/{LOCATION}/"
    for target in sorted(expected):
        link = ui.page.locator(f'a[href="{prefix}{target}"]')
        expect(link).to_be_visible()
        expect(link).to_contain_text(target.split("/", 1)[1])
    listed = ui.page.locator(f'a[href^="{prefix}sensors/"], a[href^="{prefix}schedules/"]')
    shown = {
        href.removeprefix(prefix) for href in listed.evaluate_all("links => links.map(a => a.getAttribute('href'))")
    }
    assert shown == expected
    ui.check()


def test_run_page_shows_the_successful_run_and_its_logs(
    ui: UIPage, ui_stack: UIStack, materialized: dict[str, str]
) -> None:
    run_id = materialized[DEMO_TENANTS[0]]
    # The log list renders only the rows in view: a tall window shows the whole (short) run.
    ui.page.set_viewport_size({"width": VIEWPORT["width"], "height": 3000})
    ui.open(f"/runs/{run_id}")
    page = ui.page
    expect(page).to_have_title(re.compile(rf"{run_id[:8]}.*\[SUCCESS\]"))
    header = page.locator('[class*="PageHeader"]').filter(has=page.locator('[aria-label="run_success"]'))
    expect(header.get_by_text("Success", exact=True).first).to_be_visible()
    step = "__".join(ASSET)
    for event in ("RUN_START", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "RUN_SUCCESS"):
        expect(page.get_by_text(event, exact=True).first).to_be_visible()
    expect(page.get_by_text(f'Started execution of step "{step}".', exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(rf"^{DEMO_TENANTS[0]}: users_\d{{8}}\.csv"))).to_be_visible()
    ui.check()


def test_the_checks_fail_on_an_error_the_ui_shows(ui: UIPage) -> None:
    """The webserver answering one of the automation page's queries with a GraphQL error (as it does when a resolver
    raises) must fail `check`: the UI logs it to the console and shows its error toast."""

    def graphql_error(route: Route) -> None:
        route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"data": None, "errors": [{"message": "raised by the browser suite", "path": ["sensor"]}]}),
        )

    ui.page.route("**/graphql?op=SingleSensorQuery", graphql_error)
    ui.open("/automation")
    expect(ui.page.get_by_text("Unexpected GraphQL error").first).to_be_visible()
    with pytest.raises(AssertionError) as failed:
        ui.check()
    assert "error toast shown" in str(failed.value)
    assert "console error: [GraphQL error]" in str(failed.value)
