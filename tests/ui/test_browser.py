"""The dashboard in a real browser (Debian's Chromium, driven by Playwright), over a real
`shipyard server` on what `shipyard demo` left behind: sign in, the demo's models, the drift
warning on transaction_amount, a canary changed from the CLI showing up on the open page,
approving a pending candidate, signing out; no console errors and no failed requests on any
page, at a desktop width, at a phone's and in the dark theme. Screenshots of every page are
kept under $SHIPYARD_TEST_ARTIFACTS (default .test-artifacts/) as test artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.access import KeyStore
from shipyard.core import Settings
from shipyard.demo import FEATURES, running_server, transactions
from shipyard.registry import Registry
from shipyard.retraining import _repository as pipelines
from tests.conftest import DemoRun, records

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SHIPYARD_TEST_CHROMIUM") or shutil.which("chromium")
ARTIFACTS = Path(os.environ.get("SHIPYARD_TEST_ARTIFACTS", ".test-artifacts")) / "ui"
# as root, without a sandbox; and none of the background traffic a closed network refuses
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "no chromium to drive (apt-get install chromium, or set SHIPYARD_TEST_CHROMIUM)"
        )
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(demo_run: DemoRun) -> Iterator[tuple[str, dict[str, str]]]:
    """A server on the demo's state, and keys to sign in and score with."""
    settings = Settings(home=demo_run.home, database_url=None, artifact_root=None)
    with Registry.from_settings(settings) as registry:
        store = KeyStore(registry.database, actor="browser-test")
        tokens = {
            scope: store.create(scope, name=f"browser {scope}")[1]
            for scope in ("predict", "read", "write")
        }
    tokens["admin"] = demo_run.result.dashboard_key
    with running_server(
        demo_run.home,
        SHIPYARD_REFRESH_SECONDS="0.5",
        SHIPYARD_CONFIG=str(demo_run.home / "shipyard.yaml"),
    ) as url:
        yield url, tokens


class Page:
    """A browser tab that records every console error and failed request."""

    def __init__(self, browser: Any, url: str, name: str, **context: Any) -> None:
        self.url, self.name = url, name
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        # a request the next navigation cancels (net::ERR_ABORTED) did not fail; any other did
        self.page.on(
            "requestfailed",
            lambda r: (
                None
                if "ERR_ABORTED" in (r.failure or "")
                else self.problems.append(f"failed: {r.url} {r.failure}")
            ),
        )
        self.page.on(
            "response",
            lambda r: self.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )

    def go(self, path: str) -> Any:
        response = self.page.goto(self.url + path)
        assert response is not None, path
        assert response.status == 200, (path, response.status)
        return self.page

    def shot(self, label: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{label}.png"), full_page=True)

    def sign_in(self, key: str) -> None:
        self.go("/ui/login")
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/ui/models")

    def close(self) -> None:
        self.context.close()


def test_the_morning_round_in_a_browser(
    browser: Any, site: tuple[str, dict[str, str]], demo_run: DemoRun
) -> None:
    url, tokens = site
    tab = Page(browser, url, "desktop", viewport={"width": 1280, "height": 900})
    page = tab.page
    page.goto(url + "/")  # / leads to the dashboard, which asks to sign in
    page.wait_for_url("**/ui/login**")
    tab.shot("login")
    tab.sign_in(tokens["admin"])

    # the demo's models, with their health and what serves them
    models = page.locator("tr[data-model]")
    assert sorted(models.evaluate_all("rows => rows.map(r => r.dataset.model)")) == [
        "fraud-detector",
        "fraud-detector-fs",
    ]
    row = page.locator('tr[data-model="fraud-detector"]')
    assert row.locator(".badge").first.inner_text() in ("failing", "warning", "ok")
    assert "primary" in row.inner_text()
    tab.shot("models")

    # production monitoring: the seed's page, with the drift on transaction_amount
    page.click('tr[data-model="fraud-detector"] a:text("monitoring")')
    page.wait_for_url("**/monitoring")
    warning = page.locator('[data-drift="transaction_amount"]')
    assert warning.count() == 1
    assert "Drift on transaction_amount" in warning.inner_text()
    for metric in ("accuracy", "precision", "recall", "false_positive_rate"):
        assert page.locator(f'[data-metric="{metric}"]').count() == 1
    assert page.locator('[data-kpi="fraud_blocked_usd"]').count() == 1
    assert page.locator("#chart-latency + * , [data-chart] canvas").count() > 0  # uPlot drew
    assert page.locator("[data-chart] .uplot").count() >= 4
    tab.shot("monitoring")

    # a canary changed with the CLI shows on the open model page, without reloading it
    page.goto(url + "/ui/models/fraud-detector")
    before = page.locator("[data-split]").inner_text()
    assert "canary" not in before
    env = {**os.environ, "SHIPYARD_HOME": str(demo_run.home)}
    env = {
        k: v for k, v in env.items() if k not in ("SHIPYARD_DATABASE_URL", "SHIPYARD_ARTIFACT_ROOT")
    }
    subprocess.run(
        [sys.executable, "-m", "shipyard", "deploy", "fraud-detector", "--version", "2", "--canary", "25"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    page.locator('[data-share="2"]').wait_for(timeout=15_000)
    assert page.locator('[data-share="2"]').inner_text() == "25%"
    assert "canary" in page.locator("[data-split]").inner_text()
    tab.shot("model")

    # compare two versions in one click
    page.click("button:text('Compare A and B')")
    page.wait_for_url("**/compare?**")
    assert "vs" in page.locator("h1").inner_text()
    tab.shot("compare")

    # a candidate waiting for approval, approved from the retraining page
    settings = Settings(home=demo_run.home, database_url=None, artifact_root=None)
    with Registry.from_settings(settings) as registry, registry.database.transaction() as conn:
        record = pipelines.create(
            conn, "fraud-detector", {"kind": "manual", "by": "browser test"}, 3
        )
        record["status"] = "awaiting_approval"
        record["candidate_version"] = 2
        pipelines.save(conn, record)
    page.goto(url + "/ui/models/fraud-detector/retraining")
    assert page.locator('[data-candidate="2"]').count() == 1
    assert page.locator("[data-pipeline]").count() >= 2  # the demo's loop, and this one
    tab.shot("retraining")
    page.click("button:text('Approve v2')")
    page.wait_for_url("**flash=approved")
    assert "approved and promoted" in page.locator(".banner").inner_text()
    with Registry.from_settings(settings) as registry:
        deployment = registry.deployment("fraud-detector")
    assert deployment is not None
    assert [(v.version, v.weight) for v in deployment.live] == [(2, 100.0)]

    # live traffic: requests/s per variant, refreshed in place as requests come in
    page.goto(url + "/ui/live")
    sample = transactions(50, seed=3)[FEATURES]

    def score(requests: int) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens['predict']}"}
        ) as http:
            for chunk in range(requests):
                rows = sample.iloc[chunk * 10 % 50 : chunk * 10 % 50 + 10]
                answer = http.post(
                    "/v1/models/fraud-detector/predict", json={"instances": records(rows)}
                )
                assert answer.status_code == 200

    def served() -> int:
        totals = page.locator('tr[data-variant^="fraud-detector/"] td.total').all_inner_texts()
        return sum(int(t) for t in totals)

    score(5)
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-variant^=\"fraud-detector/\"] td.total')]"
        ".reduce((n, td) => n + Number(td.textContent), 0) >= 5",
        timeout=15_000,
    )
    before = served()
    score(7)  # the page counts them without being reloaded
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('tr[data-variant^=\"fraud-detector/\"] td.total')]"
        ".reduce((n, td) => n + Number(td.textContent), 0) >= before + 7",
        arg=before,
        timeout=15_000,
    )
    assert page.locator("[data-live-chart] .uplot").count() == 1
    tab.shot("live")

    # runs, and keys (admin only)
    tab.go("/ui/runs")
    assert page.locator("input[name=run]").count() >= 1
    tab.shot("runs")
    tab.go("/ui/keys")
    assert page.locator("tr[data-key]").count() >= 4
    tab.shot("keys")

    # sign out: the pages ask to sign in again
    page.click("button:text('Sign out')")
    page.wait_for_url("**/ui/login")
    page.goto(url + "/ui/models")
    page.wait_for_url("**/ui/login**")
    assert tab.problems == []
    tab.close()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        (
            "phone",
            {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
        ),
        ("dark", {"viewport": {"width": 1280, "height": 900}, "color_scheme": "dark"}),
    ],
)
def test_every_page_renders_cleanly_on_a_phone_and_in_the_dark(
    browser: Any, site: tuple[str, dict[str, str]], name: str, options: dict[str, Any]
) -> None:
    url, tokens = site
    tab = Page(browser, url, name, **options)
    tab.sign_in(tokens["read"])
    for path, label in (
        ("/ui/models", "models"),
        ("/ui/models/fraud-detector", "model"),
        ("/ui/models/fraud-detector/monitoring", "monitoring"),
        ("/ui/models/fraud-detector/retraining", "retraining"),
        ("/ui/models/fraud-detector/compare?a=1&b=3", "compare"),
        ("/ui/runs", "runs"),
        ("/ui/live", "live"),
    ):
        page = tab.go(path)
        # nothing wider than the screen but the tables, which scroll in their own box
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        tab.shot(label)
    background = tab.page.evaluate("getComputedStyle(document.body).backgroundColor")
    if name == "dark":
        assert background == "rgb(17, 20, 24)"
    assert tab.problems == []
    # keyboard: the first Tab reaches the skip link, and it leads to the content
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.className") == "skip"
    tab.close()
