"""The dashboard over HTTP, in-process: signing in, what each scope sees and may do, forms
that need their session's CSRF token, and hostile input answered with a page, never a 5xx.

(The browser tests in test_browser.py drive the same pages in Chromium.)"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shipyard.access import SESSION_COOKIE, KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry
from shipyard.retraining import _repository as pipelines
from tests.conftest import records


@pytest.fixture
def served(sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame) -> Settings:
    """fraud-detector v1 serving, v2 registered; `other` v1 serving."""
    with Registry.from_settings(sqlite_settings) as registry:
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample, threshold=0.3)
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample, threshold=0.6)
        registry.deploy("fraud-detector", 1)
        registry.register(fraud_model, name="other", sample=fraud_sample)
        registry.deploy("other", 1)
    return sqlite_settings


def token(settings: Settings, scope: str, **options: Any) -> str:
    with Registry.from_settings(settings) as registry:
        return KeyStore(registry.database).create(scope, **options)[1]


@pytest.fixture
def app(served: Settings) -> Iterator[TestClient]:
    with TestClient(
        create_app(served), raise_server_exceptions=False, follow_redirects=False
    ) as client:
        yield client


def sign_in(client: TestClient, key: str) -> None:
    answer = client.post("/ui/login", data={"key": key, "next": "/ui/models"})
    assert answer.status_code == 303, answer.text
    assert SESSION_COOKIE in client.cookies


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def test_the_root_leads_to_the_dashboard_and_pages_ask_to_sign_in(app: TestClient) -> None:
    first = app.get("/", follow_redirects=False)
    assert (first.status_code, first.headers["location"]) == (307, "/ui")
    page = app.get("/ui/models/fraud-detector/monitoring?window=1d", follow_redirects=False)
    assert page.status_code == 303
    assert (
        page.headers["location"]
        == "/ui/login?next=/ui/models/fraud-detector/monitoring%3Fwindow%3D1d"
    )
    login = app.get(page.headers["location"])
    assert login.status_code == 200
    assert 'name="key"' in login.text


def test_signing_in_sets_a_strict_http_only_cookie_and_shows_the_models(
    app: TestClient, served: Settings
) -> None:
    answer = app.post("/ui/login", data={"key": token(served, "read"), "next": "/ui/models"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/models"
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui"):
        assert attribute.lower() in cookie.lower()
    page = app.get("/ui/models")
    assert page.status_code == 200
    assert 'data-model="fraud-detector"' in page.text
    assert 'data-model="other"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_a_wrong_or_predict_only_key_cannot_sign_in(app: TestClient, served: Settings) -> None:
    wrong = app.post("/ui/login", data={"key": "sy_0123456789abcdef_" + "x" * 40})
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    assert SESSION_COOKIE not in app.cookies
    predict = app.post("/ui/login", data={"key": token(served, "predict")})
    assert predict.status_code == 403
    assert "needs read, write or admin" in predict.text
    assert SESSION_COOKIE not in app.cookies


def test_after_signing_in_next_never_leaves_the_dashboard(
    app: TestClient, served: Settings
) -> None:
    key = token(served, "read")
    for target in ("//evil.example/ui", "https://evil.example/", "/v1/keys", "/ui\\@evil"):
        answer = app.post("/ui/login", data={"key": key, "next": target})
        assert answer.headers["location"] == "/ui/models", target


def test_every_page_renders_for_a_read_key(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "read"))
    for path in (
        "/ui/models",
        "/ui/models/fraud-detector",
        "/ui/models/fraud-detector/compare?a=1&b=2",
        "/ui/models/fraud-detector/monitoring",
        "/ui/models/fraud-detector/monitoring?window=1h&periods=3&version=2",
        "/ui/models/fraud-detector/retraining",
        "/ui/runs",
        "/ui/live",
    ):
        page = app.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert "Sign out" in page.text
        assert "Keys</a>" not in page.text  # keys are for admin keys
    compare = app.get("/ui/models/fraud-detector/compare?a=1&b=2").text
    assert "threshold" in compare or "v1 vs v2" in compare


def test_the_model_and_compare_pages_say_what_a_version_relies_on(
    app: TestClient, served: Settings
) -> None:
    sign_in(app, token(served, "read"))
    with Registry.from_settings(served) as registry:
        importance = registry.get_version("fraud-detector", 2).importance
    assert importance is not None
    top = next(iter(importance["features"]))
    page = app.get("/ui/models/fraud-detector").text
    assert "What v2 relies on" in page
    table = page[page.index('data-table="importance"') :]
    assert table.index(top) < min(table.index(f) for f in list(importance["features"])[1:4])
    assert "<meter" in table
    compare = app.get("/ui/models/fraud-detector/compare?a=1&b=2").text
    assert "What the model relies on" in compare
    assert "+0.0 pts" in compare  # the same model twice: nothing it relies on changed


def test_keys_are_for_admin_keys_only(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "write"))
    page = app.get("/ui/keys")
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "scope 'write'" in html.unescape(page.text)


def test_an_admin_creates_a_key_shown_once_and_revokes_it(
    app: TestClient, served: Settings
) -> None:
    sign_in(app, token(served, "admin", name="boss"))
    page = app.get("/ui/keys").text
    created = app.post(
        "/ui/keys",
        data={
            "csrf": csrf(page),
            "name": "from-the-dashboard",
            "scope": "read",
            "model": "",
            "rate": "10/s",
        },
    )
    assert created.status_code == 200
    shown = re.search(r"data-token>(sy_[0-9a-f]{16}_[A-Za-z0-9_-]+)<", created.text)
    assert shown is not None
    new = shown.group(1)
    assert app.get("/v1/models", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert new not in app.get("/ui/keys").text  # shown once
    key_id = new.split("_")[1]
    revoked = app.post(
        f"/ui/keys/{key_id}/revoke", data={"csrf": csrf(created.text)}, follow_redirects=False
    )
    assert revoked.status_code == 303
    deadline = time.monotonic() + 15  # servers refuse it from their next refresh of the keys
    while app.get("/v1/models", headers={"Authorization": f"Bearer {new}"}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)


def test_a_form_without_its_sessions_token_or_from_another_site_is_refused(
    app: TestClient, served: Settings
) -> None:
    sign_in(app, token(served, "admin"))
    page = app.get("/ui/keys").text
    assert app.post("/ui/keys", data={"scope": "read"}).status_code == 403
    assert app.post("/ui/keys", data={"scope": "read", "csrf": "x" * 43}).status_code == 403
    foreign = app.post(
        "/ui/keys",
        data={"scope": "read", "csrf": csrf(page)},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert "dashboard's own pages" in html.unescape(foreign.text)
    assert "from-evil" not in app.get("/ui/keys").text


def test_signing_out_ends_the_session(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "read"))
    page = app.get("/ui/models").text
    out = app.post("/ui/logout", data={"csrf": csrf(page)}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/ui/login"
    assert SESSION_COOKIE not in app.cookies
    assert app.get("/ui/models", follow_redirects=False).status_code == 303


def test_a_key_bound_to_a_model_sees_only_that_model(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "read", model="fraud-detector"))
    listing = app.get("/ui/models").text
    assert 'data-model="fraud-detector"' in listing
    assert 'data-model="other"' not in listing
    assert app.get("/ui/models/other").status_code == 403
    assert app.get("/ui/models/other/monitoring").status_code == 403
    assert app.get("/ui/live?model=other").status_code == 403


def _awaiting_approval(settings: Settings) -> int:
    """A pipeline whose candidate (v2) finished its canary and waits for a person."""
    with Registry.from_settings(settings) as registry:
        registry.deploy("fraud-detector", 2, canary=10)
        with registry.database.transaction() as conn:
            record = pipelines.create(conn, "fraud-detector", {"kind": "manual", "by": "test"}, 1)
            record["status"] = "awaiting_approval"
            record["candidate_version"] = 2
            pipelines.save(conn, record)
    return record["id"]


def test_a_write_key_approves_a_pending_candidate_from_the_page(
    app: TestClient, served: Settings
) -> None:
    pipeline = _awaiting_approval(served)
    sign_in(app, token(served, "read"))
    page = app.get("/ui/models/fraud-detector/retraining").text
    assert 'data-candidate="2"' in page
    assert "Approve v2" not in page
    forged = app.post(
        "/ui/models/fraud-detector/retraining/decide",
        data={"csrf": csrf(page), "version": "2", "verdict": "approve"},
    )
    assert forged.status_code == 403

    app.cookies.clear()
    sign_in(app, token(served, "write", name="reviewer"))
    page = app.get("/ui/models/fraud-detector/retraining").text
    assert "Approve v2" in page
    done = app.post(
        "/ui/models/fraud-detector/retraining/decide",
        data={"csrf": csrf(page), "version": "2", "verdict": "approve"},
        follow_redirects=True,
    )
    assert done.status_code == 200
    assert "approved and promoted" in done.text
    with Registry.from_settings(served) as registry:
        deployment = registry.deployment("fraud-detector")
        assert deployment is not None
        assert [(v.version, v.weight) for v in deployment.live] == [(2, 100.0)]
        assert registry.resolve("fraud-detector:champion").version == 2
        events = registry.history("fraud-detector", limit=5)
        with registry.database.transaction() as conn:
            assert pipelines.get(conn, pipeline)["status"] == "promoted"  # type: ignore[index]
    assert any("reviewer" in ev.actor and ev.action == "pipeline.promote" for ev in events)
    again = app.post(
        "/ui/models/fraud-detector/retraining/decide",
        data={"csrf": csrf(page), "version": "2", "verdict": "approve"},
    )
    assert again.status_code == 409
    assert "not waiting for approval" in again.text


def test_rejecting_a_pending_candidate_rolls_it_back(app: TestClient, served: Settings) -> None:
    _awaiting_approval(served)
    sign_in(app, token(served, "write"))
    page = app.get("/ui/models/fraud-detector/retraining").text
    app.post(
        "/ui/models/fraud-detector/retraining/decide",
        data={"csrf": csrf(page), "version": "2", "verdict": "reject"},
    )
    with Registry.from_settings(served) as registry:
        deployment = registry.deployment("fraud-detector")
        assert deployment is not None
        assert [(v.version, v.weight) for v in deployment.live] == [(1, 100.0)]


def test_the_live_sample_counts_what_the_server_answered(
    app: TestClient, served: Settings, fraud_sample: pd.DataFrame
) -> None:
    scorer = token(served, "predict")
    body = {"instances": records(fraud_sample.iloc[:3])}
    for _ in range(4):
        answer = app.post(
            "/v1/models/fraud-detector/predict",
            json=body,
            headers={"Authorization": f"Bearer {scorer}"},
        )
        assert answer.status_code == 200
    sign_in(app, token(served, "read", model="fraud-detector"))
    sample = app.get("/ui/api/live").json()
    mine = [s for s in sample["series"] if s["model"] == "fraud-detector" and s["version"] == 1]
    assert mine
    assert mine[0]["requests"] >= 4
    assert mine[0]["buckets"][-1][1] >= 4  # the +Inf bucket counts every request
    assert all(s["model"] == "fraud-detector" for s in sample["series"])  # bound: nothing else


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/models/fraud-detector/monitoring?window=abc", 400),
        ("/ui/models/fraud-detector/monitoring?periods=0", 400),
        ("/ui/models/fraud-detector/compare?a=1", 400),
        ("/ui/models/fraud-detector/compare?a=1&b=99", 404),
        ("/ui/models/no-such-model", 404),
        ("/ui/models/bad%00name", 400),
        ("/ui/runs/compare?run=../../etc", 400),
        ("/ui/runs/compare?run=nosuchrun", 404),
        ("/ui/nowhere", 404),
    ],
)
def test_bad_page_requests_get_a_page_saying_what_is_wrong(
    app: TestClient, served: Settings, path: str, status: int
) -> None:
    sign_in(app, token(served, "admin"))
    answer = app.get(path)
    assert answer.status_code == status, answer.text[:300]
    if path.startswith(("/ui/models", "/ui/runs")):
        assert answer.headers["content-type"].startswith("text/html")
        assert "Traceback" not in answer.text


def test_bad_forms_are_refused_with_a_reason(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "admin"))
    page = app.get("/ui/keys").text
    token_ = csrf(page)
    cases = [
        ({"csrf": token_, "scope": "root"}, 400, "scope"),
        ({"csrf": token_, "scope": "read", "rate": "fast"}, 400, "rate"),
        ({"csrf": token_, "scope": "read", "model": "../x"}, 400, "model"),
        ({"csrf": token_, "scope": "read", "extra": "1"}, 400, "extra"),
    ]
    for data, status, words in cases:
        answer = app.post("/ui/keys", data=data)
        assert answer.status_code == status, (data, answer.text[:300])
        assert words in answer.text
    as_json = app.post("/ui/keys", json={"scope": "read"})
    assert as_json.status_code == 415
    huge = app.post("/ui/keys", data={"csrf": token_, "scope": "read", "name": "x" * 20_000})
    assert huge.status_code == 413
    twice = app.post("/ui/keys", content=f"csrf={token_}&scope=read&scope=admin",
                     headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert twice.status_code == 400
    assert "more than once" in twice.text


def test_with_authentication_off_the_pages_say_so(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    settings = sqlite_settings.model_copy(update={"auth": "off"})
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        page = client.get("/ui/models")
        assert page.status_code == 200
        assert "Authentication is off" in page.text
        assert 'data-model="fraud-detector"' in page.text
        assert (
            client.post("/ui/models/fraud-detector/monitoring", data={"window": "1d"}).status_code
            == 403
        )


def test_signing_out_ends_a_copied_session_cookie_too(app: TestClient, served: Settings) -> None:
    sign_in(app, token(served, "read"))
    copied = app.cookies[SESSION_COOKIE]
    page = app.get("/ui/models").text
    app.post("/ui/logout", data={"csrf": csrf(page)})
    app.cookies.set(SESSION_COOKIE, copied, path="/ui")
    answer = app.get("/ui/models")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login")


@pytest.mark.parametrize(
    ("data", "headers", "status"),
    [
        ({"csrf": "\u00e9" * 10, "scope": "read"}, {}, 400),
        ({"scope": "read"}, {"Origin": "http://[x"}, 403),
        ({"scope": "read"}, {"Referer": "http://[::1"}, 403),
        ({"scope": "read", "rate": "99999999999999999999999999/s"}, {}, 400),
        ({"scope": "read", "rate": "999999999/s"}, {}, 422),
    ],
)
def test_hostile_forms_get_a_4xx_never_a_5xx(
    app: TestClient,
    served: Settings,
    data: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    sign_in(app, token(served, "admin"))
    form = {"csrf": csrf(app.get("/ui/keys").text), **data}
    answer = app.post("/ui/keys", data=form, headers=headers)
    assert answer.status_code == status, answer.text[:400]


def test_a_malformed_origin_on_sign_in_is_refused(app: TestClient, served: Settings) -> None:
    answer = app.post(
        "/ui/login", data={"key": token(served, "read")}, headers={"Origin": "http://[x"}
    )
    assert answer.status_code == 403


def test_two_decisions_at_once_make_one_change(app: TestClient, served: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from shipyard.core import errors as e
    from shipyard.retraining import decide_by_person

    _awaiting_approval(served)
    with Registry.from_settings(served) as registry:

        def decide(verdict: str) -> str:
            try:
                decide_by_person(registry, "fraud-detector", 2, verdict)  # type: ignore[arg-type]
            except e.Conflict:
                return "conflict"
            return verdict

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(decide, ["approve", "reject"]))
        deployment = registry.deployment("fraud-detector")
    assert len([o for o in outcomes if o != "conflict"]) == 1, outcomes
    assert deployment is not None
    won = next(o for o in outcomes if o != "conflict")
    expected = [(2, 100.0)] if won == "approve" else [(1, 100.0)]
    assert [(v.version, v.weight) for v in deployment.live] == expected


def test_runs_filter_and_compare_with_their_metric_curves(
    app: TestClient, served: Settings
) -> None:
    from shipyard.tracking import Tracker

    with Registry.from_settings(served) as registry:
        tracker = Tracker(registry.database, registry.artifacts, actor="tests")
        ids = []
        for c in (0.1, 1.0):
            with tracker.start_run("fraud", name=f"lr-c{c}") as run:
                run.log_params({"C": c, "max_iter": 200})
                for step in range(5):
                    run.log_metric("loss", 1.0 / (step + 1) + c, step=step)
                run.log_metric("auc", 0.8 + c / 10)
                ids.append(run.id)
        with tracker.start_run("other", name="unrelated") as run:
            run.log_metric("auc", 0.5)
    sign_in(app, token(served, "read"))
    listed = app.get("/ui/runs?experiment=fraud").text
    assert "lr-c0.1" in listed
    assert "lr-c1.0" in listed
    assert "unrelated" not in listed
    assert "lr-c1.0" not in app.get("/ui/runs?q=c0.1").text
    compared = app.get(f"/ui/runs/compare?run={ids[0]}&run={ids[1]}")
    assert compared.status_code == 200
    page = html.unescape(compared.text)
    assert 'class="differs"><th scope="row">C</th>' in page  # the parameter that differs
    island = re.search(
        r'<script type="application/json" id="chart-curve-1">(.*?)</script>', compared.text
    )
    assert island is not None
    chart = json.loads(island.group(1))
    assert chart["title"] == "loss"
    assert chart["x"] == [0, 1, 2, 3, 4]
    assert [s["label"] for s in chart["series"]] == ids
    assert chart["series"][0]["values"][0] == pytest.approx(1.1)
