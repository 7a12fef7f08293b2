"""The web UI: its pages over HTTP, and driven in a real browser against a real server.

The store is seeded once (``ui_seed``): two experiments on one dataset, with booleans,
scores, categorical labels, tokens, cost and a failed row. The browser tests run Debian's
``chromium`` headless through Playwright against ``assay serve``'s app on a loopback
port, and write a screenshot of every page to ``test-output/ui/`` (see docs/ui.md).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from assay.server import create_app
from assay.server.ui import facets
from assay.server.ui.facets import FacetState
from assay.store.sql.backend import SqlBackend
from live_server import serving
from ui_seed import Seeded, seed

API = "/api/v2/llm-obs/v1"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "ui"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlBackend, Seeded]]:
    folder = tmp_path_factory.mktemp("ui-store")
    url = f"sqlite:///{folder}/assay.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSAY_HOME", str(folder))
        patch.setenv("ASSAY_PROGRESS", "0")
        ids = seed(url)
    backend = SqlBackend(url)
    try:
        yield backend, ids
    finally:
        backend.close()


@pytest.fixture
def client(seeded: tuple[SqlBackend, Seeded]) -> Iterator[TestClient]:
    with TestClient(create_app(backend=seeded[0])) as test_client:
        yield test_client


# Over HTTP ---------------------------------------------------------------------------------


def test_every_page_answers(client: TestClient, seeded: tuple[SqlBackend, Seeded]) -> None:
    _, ids = seeded
    base = f"/llm/experiments/{ids.baseline_id}"
    pages = [
        "/llm/experiments",
        "/llm/experiments?name=base&status=completed",
        base,
        f"{base}?run=2",
        f"{base}?run=2&q=@status:error&sort=-duration",
        f"{base}/summary",
        f"{base}/summary?run=3",
        f"{base}/records/{ids.failing_record_id}",
        f"{base}/records/{ids.failing_record_id}/runs",
        f"/llm/experiments/compare?a={ids.baseline_id}&b={ids.candidate_id}",
        f"/llm/experiments/compare?a={ids.baseline_id}&run_a=1&b={ids.candidate_id}&run_b=4",
        f"/llm/experiments/compare?a={ids.baseline_id}&b={ids.candidate_id}"
        f"&c={ids.baseline_id}&run_c=2&show=changed",
        f"/llm/datasets/{ids.dataset_id}",
        f"/llm/datasets/{ids.dataset_id}?version=1",
        "/llm/static/htmx.min.js",
        "/llm/static/assay.css",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    assert client.get("/", follow_redirects=False).headers["location"] == "/llm/experiments"


def test_unknown_ids_get_the_html_404_page(
    client: TestClient, seeded: tuple[SqlBackend, Seeded]
) -> None:
    _, ids = seeded
    for page in (
        "/llm/experiments/no-such-id",
        f"/llm/experiments/{ids.baseline_id}/records/no-such-record",
        f"/llm/experiments/{ids.baseline_id}?run=9",
        "/llm/datasets/no-such-id",
        f"/llm/datasets/{ids.dataset_id}?version=7",
        f"/llm/experiments/compare?a={ids.baseline_id}&b=no-such-id",
    ):
        response = client.get(page)
        assert response.status_code == 404, page
        assert response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text or "No such" in response.text
    lonely = client.get(f"/llm/experiments/compare?a={ids.baseline_id}")
    assert lonely.status_code == 400 and "two experiments" in lonely.text


def test_pages_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/llm") or path == "/"]


def test_the_facet_form_redirects_to_the_query_it_writes(
    client: TestClient, seeded: tuple[SqlBackend, Seeded]
) -> None:
    _, ids = seeded
    response = client.get(
        f"/llm/experiments/{ids.baseline_id}",
        params={
            "facets": "1",
            "q": "Paris @multi_run_mode.@evaluations.custom.tone:neutral",
            "f.evaluation:tone": ["negative", "positive"],
            "f.duration.min": "1.5",
            "f.estimated_total_cost.max": "0.01",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    [query] = parse_qs(urlsplit(response.headers["location"]).query)["q"]
    assert query == (
        "Paris @multi_run_mode.@evaluations.custom.tone:(negative OR positive) "
        "@multi_run_avg.@duration:>=1.5ms @multi_run_avg.@trace.estimated_total_cost:<=10000000"
    )


def test_a_bad_query_shows_its_message_and_caret(
    client: TestClient, seeded: tuple[SqlBackend, Seeded]
) -> None:
    _, ids = seeded
    response = client.get(
        f"/llm/experiments/{ids.baseline_id}", params={"q": "@evaluations.custom.overlap:>"}
    )
    assert response.status_code == 200
    assert "at position 29" in response.text
    assert "@evaluations.custom.overlap:&gt;\n" + " " * 29 + "^" in response.text


def test_the_list_shows_the_summary_values_of_the_api(
    client: TestClient, seeded: tuple[SqlBackend, Seeded]
) -> None:
    _, ids = seeded
    api = client.get(f"{API}/experiments/{ids.baseline_id}/summary").json()
    exact = api["data"]["attributes"]["evaluations"]["exact_match"]["value"]
    overlap = api["data"]["attributes"]["evaluations"]["overlap"]["value"]
    page = client.get("/llm/experiments", params={"name": "baseline"}).text
    assert f"{exact * 100:.0f}%" in page
    assert f"{overlap:,.3f}".rstrip("0") in page


def test_a_key_is_asked_once_and_kept_in_a_cookie(seeded: tuple[SqlBackend, Seeded]) -> None:
    backend, ids = seeded
    _, key = backend.create_api_key("ui-test")
    with TestClient(create_app(backend=backend, require_auth=True)) as client:
        page = f"/llm/experiments/{ids.baseline_id}"
        asked = client.get(page)
        assert asked.status_code == 401 and 'name="key"' in asked.text
        wrong = client.post("/llm/login", data={"key": "assay_wrong", "next": page})
        assert wrong.status_code == 401
        answer = client.post("/llm/login", data={"key": key, "next": page}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == page
        assert "httponly" in answer.headers["set-cookie"].lower()
        assert client.get(page).status_code == 200
        elsewhere = client.post(
            "/llm/login", data={"key": key, "next": "https://evil.example/"}, follow_redirects=False
        )
        assert elsewhere.headers["location"] == "/llm/experiments"
        client.post("/llm/logout")
        assert client.get(page).status_code == 401


def test_facets_read_and_write_the_query() -> None:
    from assay.query import Catalog

    catalog = Catalog({"ok": "boolean", "tone": "categorical", "score": "score"})
    specs = facets.specs(catalog)
    query = "Paris (a OR b) @status:error @evaluations.custom.tone:(x OR y) @duration:[1ms TO 2s]"
    states = facets.read(query, specs, multi_run=False)
    assert states["status"].checked == {"error"}
    assert states["evaluation:tone"].checked == {"x", "y"}
    assert (states["duration"].low, states["duration"].high) == ("1", "2000")
    chosen = {spec.key: FacetState() for spec in specs}
    chosen["evaluation:ok"] = FacetState(checked={"true"})
    chosen["evaluation:score"] = FacetState(low="0.5")
    assert facets.compose(query, specs, chosen, multi_run=False) == (
        "Paris (a OR b) @evaluations.custom.ok:true @evaluations.custom.score:>=0.5"
    )
    assert facets.retarget("@status:error -@duration:>1s x", specs, to_multi_run=True) == (
        "@multi_run_mode.@status:error -@multi_run_avg.@duration:>1s x"
    )
    assert facets.retarget(
        "@multi_run_avg.@evaluations.custom.score:>0.5", specs, to_multi_run=False
    ) == ("@evaluations.custom.score:>0.5")
    # A query that does not parse keeps its text; the facet terms follow it.
    assert facets.compose("@a:(", specs, {"status": FacetState({"ok"})}, multi_run=False) == (
        "@a:( @status:ok"
    )


# In a browser ------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="module")
def site(seeded: tuple[SqlBackend, Seeded]) -> Iterator[str]:
    with serving(create_app(backend=seeded[0])) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        context.close()


def _shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _api_total(site: str, experiment_id: str, query: str, **extra: Any) -> tuple[int, int]:
    answer = httpx.get(
        f"{site}{API}/experiments/{experiment_id}/records",
        params={"filter[query]": query, **extra},
    ).json()
    return answer["meta"]["total"], answer["meta"]["of"]


def _count(page: Any) -> tuple[int, int]:
    count = page.locator("#count")
    return int(count.get_attribute("data-total")), int(count.get_attribute("data-of"))


def test_every_page_loads_in_a_browser(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/")
    assert page.url.endswith("/llm/experiments")
    assert page.locator("table.experiments tbody tr").count() == 2
    _shoot(page, "experiments")

    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    page.locator("#summary .card").first.wait_for()
    assert page.locator('#summary .card[data-label="exact_match"] table.passk').count() == 1
    assert page.locator("#summary svg.chart.runs").count() >= 2
    assert page.locator("table.records tbody tr.row").count() == 10
    _shoot(page, "experiment")

    page.goto(f"{site}/llm/experiments/{ids.baseline_id}/records/{ids.failing_record_id}")
    assert page.locator(".run-detail").count() == 3
    assert "TimeoutError" in page.locator("#run-2").inner_text()
    assert page.locator("#run-1 table.trace tbody tr").count() == 2
    _shoot(page, "record")

    page.goto(f"{site}/llm/datasets/{ids.dataset_id}")
    assert page.locator("table.versions tbody tr").count() == 3  # 0 (empty), 1, 2
    assert page.locator("table.dataset-records tbody tr").count() == 11
    _shoot(page, "dataset")


def test_typing_a_query_filters_and_counts_like_the_api(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    query = "@evaluations.custom.overlap:>=0.5 @trace.total_tokens:>400"
    page.fill("#q", query)
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#count').dataset.of === '30'")
    total, of = _api_total(site, ids.baseline_id, query)
    assert _count(page) == (total, of) and 0 < total < of
    assert page.locator("table.records tbody tr.row").count() == min(total, 25)
    assert parse_qs(urlsplit(page.url).query)["q"] == [query]
    _shoot(page, "experiment-query")


def test_a_facet_writes_the_query_and_filters_the_rows(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    page.locator('fieldset[data-facet="evaluation:tone"] input[value="negative"]').check()
    expected = "@multi_run_mode.@evaluations.custom.tone:negative"
    page.wait_for_function(f"document.querySelector('#q').value === {expected!r}")
    total, of = _api_total(site, ids.baseline_id, expected)
    page.wait_for_function(f"document.querySelector('#count').dataset.total === '{total}'")
    assert _count(page) == (total, of)
    assert page.locator("table.records tbody tr.row").count() == total
    page.fill('input[name="f.evaluation:overlap.max"]', "0.5")
    page.press('input[name="f.evaluation:overlap.max"]', "Tab")
    both = expected + " @multi_run_avg.@evaluations.custom.overlap:<=0.5"
    page.wait_for_function(f"document.querySelector('#q').value === {both!r}")
    narrowed, _ = _api_total(site, ids.baseline_id, both)
    page.wait_for_function(f"document.querySelector('#count').dataset.total === '{narrowed}'")
    assert parse_qs(urlsplit(page.url).query)["q"] == [both]
    _shoot(page, "experiment-facets")


def test_the_run_selector_changes_the_rows(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    page.locator("table.records button.expand").first.click()
    page.locator("#runs-1 table.runs").wait_for()
    assert page.locator("#runs-1 table.runs tbody tr").count() == 3
    page.get_by_role("link", name="Run 2", exact=True).click()
    page.wait_for_url(re.compile(r"run=2"))
    assert _count(page) == _api_total(site, ids.baseline_id, "", **{"filter[run_iteration]": 2})
    assert page.locator("table.records tbody tr.row.failed").count() == 1
    assert page.locator("table.records td.idx", has_text="run 2").count() == 10
    page.locator("#summary .card").first.wait_for()
    _shoot(page, "experiment-run-2")


def test_the_comparison_shows_the_two_chosen_runs(page: Any, site: str, seeded: Any) -> None:
    page.goto(f"{site}/llm/experiments")
    page.locator('input[name="e"]').nth(0).check()
    page.locator('input[name="e"]').nth(1).check()
    page.click("#compare-button")
    page.wait_for_url(re.compile(r"/llm/experiments/compare\?a="))
    page.select_option('select[name="run_a"]', "1")
    page.select_option('select[name="run_b"]', "2")
    page.click("form.sides button")
    page.wait_for_url(re.compile(r"run_a=1.*run_b=2"))
    heads = page.locator("th.side-head").all_inner_texts()
    assert "run 1" in heads[0] and "run 2" in heads[1]
    assert page.locator('table.metrics-table tr[data-label="exact_match"] .badge').count() == 1
    assert page.locator("table.compare-records tbody tr").count() == 10
    _shoot(page, "compare")
    page.get_by_role("link", name="changed", exact=True).click()
    page.wait_for_url(re.compile(r"show=changed"))
    assert 0 < page.locator("table.compare-records tbody tr[data-record]").count() < 10


def test_an_invalid_query_shows_its_error_in_place(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}?run=1")
    page.fill("#q", "@evaluations.custom.overlap:>")
    page.press("#q", "Enter")
    error = page.locator("#query-error")
    error.wait_for()
    assert "position 29" in error.inner_text()
    assert error.locator("pre.caret").inner_text().endswith(" " * 29 + "^")
    _shoot(page, "experiment-query-error")
