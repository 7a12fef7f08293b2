"""The web UI: its pages over HTTP, and driven in a real browser against a real server.

The store is seeded once (``ui_seed``): two experiments on one dataset, with booleans,
scores, categorical labels, tokens, cost and a failed row. The browser tests run Debian's
``chromium`` headless through Playwright against ``assay serve``'s app on a loopback
port, and write a screenshot of every page to ``test-output/ui/`` (see docs/ui.md).
"""

from __future__ import annotations

import math
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

from assay.aggregation import summarize, summarize_records
from assay.server import create_app
from assay.server.ui import datasets, experiments, facets
from assay.server.ui.experiments import ALL_RECORDS
from assay.server.ui.facets import FacetState
from assay.server.ui.memo import VersionedMemo
from assay.store.sql import browse
from assay.store.sql.all_records import all_records_page
from assay.store.sql.backend import SqlBackend
from assay.store.sql.summary_figures import summary_figures
from assay.trace_metrics import summarize_trace_metrics
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


def _form_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the form has no csrf field"
    return found.group(1)


def test_a_key_is_asked_once_and_kept_in_a_cookie(seeded: tuple[SqlBackend, Seeded]) -> None:
    backend, ids = seeded
    _, key = backend.create_api_key("ui-test")
    with TestClient(create_app(backend=backend, require_auth=True)) as client:
        page = f"/llm/experiments/{ids.baseline_id}"
        asked = client.get(page)
        assert asked.status_code == 401 and 'name="key"' in asked.text
        token = _form_token(asked.text)
        wrong = client.post("/llm/login", data={"key": "assay_wrong", "next": page, "csrf": token})
        assert wrong.status_code == 401
        answer = client.post(
            "/llm/login",
            data={"key": key, "next": page, "csrf": token},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == page
        assert "httponly" in answer.headers["set-cookie"].lower()
        shown = client.get(page)
        assert shown.status_code == 200 and 'action="/llm/logout"' in shown.text
        elsewhere = client.post(
            "/llm/login",
            data={"key": key, "next": "https://evil.example/", "csrf": token},
            follow_redirects=False,
        )
        assert elsewhere.headers["location"] == "/llm/experiments"
        client.post("/llm/logout", data={"csrf": _form_token(shown.text)})
        assert client.get(page).status_code == 401


def test_login_and_logout_refuse_a_post_without_the_page_token(
    seeded: tuple[SqlBackend, Seeded],
) -> None:
    backend, ids = seeded
    _, key = backend.create_api_key("ui-csrf")
    page = f"/llm/experiments/{ids.baseline_id}"
    with TestClient(create_app(backend=backend, require_auth=True)) as client:
        # A form posted from another site: no token cookie, no field.
        forged = client.post("/llm/login", data={"key": key, "next": page})
        assert forged.status_code == 403 and "another site" in forged.text
        assert "assay_api_key" not in client.cookies
        # The browser now holds a token (the 403 page set it), but the field is not it.
        token = _form_token(forged.text)
        wrong = client.post("/llm/login", data={"key": key, "csrf": "x" * 43})
        assert wrong.status_code == 403 and "assay_api_key" not in client.cookies
        client.post("/llm/login", data={"key": key, "next": page, "csrf": token})
        assert client.get(page).status_code == 200
        assert client.post("/llm/logout").status_code == 403
        assert client.get(page).status_code == 200, "a forged logout must not forget the key"
    cookie = forged.headers["set-cookie"].lower()
    assert "assay_csrf=" in cookie and "samesite=strict" in cookie and "httponly" in cookie


def test_the_dataset_page_reads_one_page_of_records(
    client: TestClient, seeded: tuple[SqlBackend, Seeded], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ids = seeded
    monkeypatch.setattr(datasets, "PAGE_SIZE", 4)
    shown = []
    for number in (1, 2, 3):
        page = client.get(f"/llm/datasets/{ids.dataset_id}", params={"page": number}).text
        assert f"Page {number} of 3" in page
        body = page.split('class="dataset-records"')[1].split("</tbody>")[0]
        shown += re.findall(r"capital of (\w+)", body)
    assert len(shown) == 11 and len(set(shown)) == 11 and shown[-1] == "Norway"


def test_the_memo_recomputes_when_the_rows_change() -> None:
    kept = VersionedMemo(size=2)
    calls: list[str] = []

    def compute(name: str) -> Any:
        return lambda: calls.append(name) or name

    assert kept.get("a", (1, 1), compute("a1")) == "a1"
    assert kept.get("a", (1, 1), compute("a2")) == "a1"  # same rows: kept
    assert kept.get("a", (2, 3), compute("a3")) == "a3"  # a writer added rows
    kept.get("b", (1, 1), compute("b"))
    kept.get("c", (1, 1), compute("c"))  # over the size: the least recently used goes
    assert kept.get("a", (2, 3), compute("a4")) == "a4"
    assert calls == ["a1", "a3", "b", "c", "a4"]


def test_paging_a_comparison_compares_once(
    client: TestClient, seeded: tuple[SqlBackend, Seeded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comparison is kept with each record's change until either side's rows change:
    the next page, or another filter, compares nothing again."""
    from assay.server.ui import compare

    _, ids = seeded
    monkeypatch.setattr(compare, "PAGE_SIZE", 3)
    compare.COMPARISONS.clear()
    calls: list[int] = []
    real = compare.compare_values

    def counted(*arguments: Any, **options: Any) -> Any:
        calls.append(1)
        return real(*arguments, **options)

    monkeypatch.setattr(compare, "compare_values", counted)
    url = f"/llm/experiments/compare?a={ids.baseline_id}&b={ids.candidate_id}"
    pages = [client.get(f"{url}&page={number}").text for number in (1, 2)]
    assert client.get(f"{url}&show=regressed").status_code == 200
    assert len(calls) == 1
    assert "Page 1 of" in pages[0] and "Page 2 of" in pages[1]
    assert pages[0] != pages[1]


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
    # Ten shared records, and Norway's, which only B (on dataset version 2) has.
    assert page.locator("table.compare-records tbody tr").count() == 11
    assert page.locator("table.compare-records tbody tr.one-sided").count() == 1
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


def _close(found: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return set(found) == set(expected) and all(
            _close(found[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return len(found) == len(expected) and all(map(_close, found, expected))
    if isinstance(expected, float) and isinstance(found, float | int):
        return math.isclose(found, expected, rel_tol=1e-9, abs_tol=1e-12)
    return bool(found == expected)


@pytest.mark.parametrize("shortcut", [True, False], ids=["whole-records", "record-pass"])
def test_the_summary_figures_are_those_of_summarize(
    seeded: tuple[SqlBackend, Seeded], shortcut: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.store.sql import summary_figures as module

    whole = module._whole
    found_whole: set[str] = set()

    def spied(*arguments: Any) -> dict[str, Any]:
        # Without the shortcut every figure comes from the pass over the records.
        facets = whole(*arguments) if shortcut else {}
        found_whole.update(facets)
        return facets

    monkeypatch.setattr(module, "_whole", spied)
    backend, ids = seeded
    for experiment_id in (ids.baseline_id, ids.candidate_id):
        info = backend.get_experiment(experiment_id)
        backend.refresh_aggregates(info.id, only_if_stale=True)
        every = [run.run_iteration for run in info.runs]
        for run in (None, *every):
            iterations = every if run is None else [run]
            rows = backend.experiment_rows(info.id, run_iteration=run)
            with backend.engine.connect() as connection:
                figures = summary_figures(connection, info, run=run)
            expected = summarize(rows, iterations)
            assert _close(figures.evaluations, expected), (run, figures.evaluations, expected)
            if run is None:  # the experiments list's values, from the same aggregates
                listed = browse.experiment_totals(backend.engine, [info.id])[info.id]
                assert _close(
                    {label: value for label, (_, value) in listed.evaluations.items()},
                    {label: summary["value"] for label, summary in expected.items()},
                )
            assert _close(figures.trace, summarize_trace_metrics(rows)), run
            assert figures.rows == len(rows)
            assert figures.records == len({row.record_id for row in rows})
            records = summarize_records(rows, iterations)
            for label, histogram in figures.histograms.items():
                values = [
                    item["evaluations"][label]["value"]
                    for item in records
                    if item["evaluations"][label]["value"] is not None
                ]
                assert sum(histogram.counts) == len(values)
                low, high = (
                    (0.0, 1.0)
                    if expected[label]["metric_type"] == "boolean"
                    else (min(values), max(values))
                )
                # One value everywhere: the chart widens its range, as charts.histogram does.
                assert (histogram.low, histogram.high) == (low, high if high > low else low + 1)
            assert figures.flaky == {
                label: sum(1 for item in records if item["evaluations"][label]["flaky"])
                for label, summary in expected.items()
                if summary["metric_type"] == "boolean"
            }
    # The seeded experiments have facets every record has in every run, and some not.
    assert bool(found_whole) == shortcut, found_whole


def _facet_counts(page: Any, key: str) -> dict[str, int]:
    labels = page.locator(f'fieldset[data-facet="{key}"] label.check')
    return {
        labels.nth(index).locator(".value").inner_text(): int(
            labels.nth(index).locator(".count").inner_text()
        )
        for index in range(labels.count())
    }


def test_facet_counts_narrow_with_the_query(page: Any, site: str, seeded: Any) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    everything = _facet_counts(page, "evaluation:tone")
    page.locator('fieldset[data-facet="evaluation:tone"] input[value="negative"]').check()
    tone = "@multi_run_mode.@evaluations.custom.tone:negative"
    page.wait_for_function(f"document.querySelector('#q').value === {tone!r}")
    page.wait_for_function(
        "document.querySelector('#count').dataset.total === "
        f"'{_api_total(site, ids.baseline_id, tone)[0]}'"
    )
    # The ticked facet keeps its own counts, so its other values stay choosable ...
    assert _facet_counts(page, "evaluation:tone") == everything
    # ... and every other facet counts among the records the query selects, as the API does.
    narrowed = _facet_counts(page, "evaluation:exact_match")
    for value, count in narrowed.items():
        both = f"{tone} @multi_run_mode.@evaluations.custom.exact_match:{value}"
        assert count == _api_total(site, ids.baseline_id, both)[0], value
    assert sum(narrowed.values()) == _api_total(site, ids.baseline_id, tone)[0]
    _shoot(page, "experiment-facets-narrowed")


def test_facet_counts_of_one_run_narrow_to_its_matching_rows(
    client: TestClient, seeded: tuple[SqlBackend, Seeded]
) -> None:
    _, ids = seeded
    query = "@evaluations.custom.exact_match:false"
    page = client.get(f"/llm/experiments/{ids.baseline_id}", params={"run": 1, "q": query}).text
    tone = re.search(r'data-facet="evaluation:tone".*?</fieldset>', page, re.S)
    assert tone is not None
    counts = {
        value: int(count)
        for value, count in re.findall(
            r'class="value">([^<]+)</span><span class="count">(\d+)', tone.group(0)
        )
    }
    for value, count in counts.items():
        answer = client.get(
            f"{API}/experiments/{ids.baseline_id}/records",
            params={
                "filter[query]": f"{query} @evaluations.custom.tone:{value}",
                "filter[run_iteration]": 1,
            },
        ).json()
        assert count == answer["meta"]["total"], value
    assert "positive" in counts and counts["positive"] == 0  # listed, nothing matches


def _column(page: Any, title: str) -> list[str]:
    headers = page.locator("table.records thead th").all_inner_texts()
    position = next(i for i, text in enumerate(headers) if text.strip().startswith(title))
    return page.locator(
        f"table.records tbody tr.row td:nth-child({position + 1})"
    ).all_inner_texts()


def test_one_run_sorts_by_an_evaluation_and_all_runs_by_an_aggregate(
    page: Any, site: str, seeded: Any
) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/{ids.baseline_id}?run=2")
    page.locator("table.records thead a.sort", has_text="overlap").click()
    page.wait_for_url(re.compile(r"sort=-%40evaluations.custom.overlap|sort=-@evaluations"))
    page.locator("table.records thead a.sort.active", has_text="overlap").wait_for()
    shown = [float(text) if text != "–" else -1.0 for text in _column(page, "overlap")]
    assert shown == sorted(shown, reverse=True) and shown[0] > shown[-1]
    assert page.locator("table.records td.idx", has_text="run 2").count() == 10
    page.locator("table.records thead a.sort", has_text="overlap").click()
    page.wait_for_function("location.search.includes('sort=%40evaluations')")
    page.locator("table.records thead a.sort.active", has_text="overlap").wait_for()
    rising = [float(text) if text != "–" else 2.0 for text in _column(page, "overlap")]
    assert rising == sorted(rising)
    _shoot(page, "experiment-run-2-sorted")

    page.goto(f"{site}/llm/experiments/{ids.baseline_id}")
    page.locator("table.records thead a.sort", has_text="exact_match").click()
    page.wait_for_function("location.search.includes('exact_match')")
    page.locator("table.records thead a.sort.active", has_text="exact_match").wait_for()
    shares = [int(text.rstrip("%")) for text in _column(page, "exact_match") if text != "–"]
    assert shares == sorted(shares, reverse=True) and shares[0] > shares[-1]


def test_comparison_bars_have_intervals_and_one_sided_records_are_listed(
    page: Any, site: str, seeded: Any
) -> None:
    _, ids = seeded
    page.goto(f"{site}/llm/experiments/compare?a={ids.baseline_id}&b={ids.candidate_id}")
    row = page.locator('table.metrics-table tr[data-label="overlap"]')
    assert row.locator("svg.chart.bars line.whisker").count() == 2
    assert row.locator(".side-interval").count() == 2
    marked = page.locator("table.compare-records tbody tr.one-sided")
    assert marked.count() == 1
    assert "only in B" in marked.locator(".badge.one-sided").inner_text()
    assert "Norway" in marked.inner_text()
    _shoot(page, "compare-intervals")
    page.get_by_role("link", name="one-sided", exact=True).click()
    page.wait_for_url(re.compile(r"show=one-sided"))
    assert page.locator("table.compare-records tbody tr[data-record]").count() == 1


def test_the_first_view_lists_what_search_lists(seeded: tuple[SqlBackend, Seeded]) -> None:
    backend, ids = seeded
    for experiment_id in (ids.baseline_id, ids.candidate_id):
        info = backend.get_experiment(experiment_id)
        backend.refresh_aggregates(info.id, only_if_stale=True)
        for limit, offset in ((25, 0), (4, 0), (4, 8), (4, 40)):
            with backend.engine.connect() as connection:
                fast = all_records_page(connection, info, limit=limit, offset=offset)
            searched = backend.search(info.id, ALL_RECORDS, limit=limit, offset=offset)
            assert (fast.total, fast.of, fast.multi_run) == (
                searched.total,
                searched.of,
                searched.multi_run,
            )
            assert fast.items == searched.items


def test_pages_of_an_evaluation_sort_follow_one_order(
    client: TestClient, seeded: tuple[SqlBackend, Seeded], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages 1-2 come from the kept window of sorted rows, page 3 from its own query.
    monkeypatch.setattr(experiments, "PAGE_SIZE", 4)
    monkeypatch.setattr(experiments, "SORT_WINDOW", 8)
    _, ids = seeded
    for sort in ("-@evaluations.custom.overlap", "@evaluations.custom.tone"):
        shown: list[str] = []
        for number in (1, 2, 3):
            page = client.get(
                f"/llm/experiments/{ids.baseline_id}",
                params={"run": 2, "sort": sort, "page": number},
            ).text
            shown += re.findall(r'<tr class="row[^"]*" data-record="([^"]+)"', page)
        assert len(shown) == 10 and len(set(shown)) == 10, sort
