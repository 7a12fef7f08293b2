"""Web UI speed on a big experiment: each page's median server time beside the API's.

Workload (issue 7): one experiment of 100,000 records x 5 runs x 3 evaluators in SQLite,
the store of ``benchmarks/query.py`` (built once; ``--store DIR`` reuses it, and the same
folder serves both benchmarks). Every page is requested in-process through Starlette's
``TestClient`` against ``create_app`` (the ASGI app ``assay serve`` runs, no network and
no uvicorn), so the time is the server's: routing, the store's queries and the template.
Each page is printed beside the JSON API request that answers the same question. The
target is a median of at most 300 ms for every page.

    python benchmarks/ui.py [--records 100000] [--runs 5] [--repeat 7] [--store DIR]

The first request after the store was built also rebuilds the per-record aggregates (as
the first search does); it is timed and printed on its own, then every page is requested
once more (``cold``, shown too) before the timed repeats: the pages keep what they
compute from every row until the experiment's rows change, so ``cold`` is what the first
viewer after a write waits. An API request that takes over 5 s cold (the API's summary
reads every row) is timed that once, and such a page of the UI once more.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query import MULTI_RUN, stored  # the sibling benchmark builds the store

API = "/api/v2/llm-obs/v1"
ROW_LEVEL = "@trace.total_tokens:>1000"
"""The row-level query of benchmarks/query.py, in run 1's view (``run=1``)."""
TARGET = 0.3


SLOW = 5.0
"""A request slower than this (seconds) when cold is timed once, not ``--repeat`` times."""


def timed(client: Any, url: str, repeat: int, *, once_if_slow: bool) -> tuple[float, float]:
    """The cold time (the first request) and the median of ``repeat`` more. After a first
    request over ``SLOW`` seconds: with ``once_if_slow`` that is the only one, else one more
    (a page that keeps its figures is fast the second time; one that does not, is not)."""
    times: list[float] = []
    while len(times) < repeat + 1:
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        if times[0] > SLOW:
            if once_if_slow:
                return times[0], times[0]
            repeat = 1
    return times[0], statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="build the store here once and reuse it (default: a temporary one)",
    )
    arguments = parser.parse_args()
    with contextlib.ExitStack() as stack:
        folder = arguments.store or stack.enter_context(tempfile.TemporaryDirectory())
        os.environ["ASSAY_HOME"] = folder
        os.environ["ASSAY_PROGRESS"] = "0"
        _, experiment_id = stored(arguments.records, arguments.runs)

        from fastapi.testclient import TestClient

        from assay import LLMObs
        from assay.server import create_app
        from assay.store import open_backend

        LLMObs.disable()
        backend = open_backend()
        stack.callback(backend.close)
        info = backend.get_experiment(experiment_id)
        client = stack.enter_context(TestClient(create_app(backend=backend)))
        page = f"/llm/experiments/{experiment_id}"
        api = f"{API}/experiments/{experiment_id}"
        started = time.perf_counter()
        client.get(page)
        print(
            f"first page (rebuilds the aggregates if stale): {time.perf_counter() - started:.2f} s"
        )

        def search(query: str, **extra: Any) -> str:
            return f"{api}/records?" + urlencode(
                {"filter[query]": query, "page[limit]": 25, **extra}
            )

        cases = [
            (
                "experiment page (all runs)",
                page,
                search("@multi_run_mode.@status:*"),
            ),
            ("summary fragment (all runs)", f"{page}/summary", f"{api}/summary"),
            (
                "summary fragment (run 1)",
                f"{page}/summary?run=1",
                f"{api}/summary?filter[run_iteration]=1",
            ),
            (
                "records, multi-run query",
                f"{page}?" + urlencode({"q": MULTI_RUN}),
                search(MULTI_RUN),
            ),
            (
                "records, row-level query (run 1)",
                f"{page}?" + urlencode({"q": ROW_LEVEL, "run": 1}),
                search(ROW_LEVEL, **{"filter[run_iteration]": 1}),
            ),
            (
                "records, run 1 sorted by a score (API: unsorted, it cannot sort so)",
                f"{page}?" + urlencode({"run": 1, "sort": "-@evaluations.custom.random_evaluator"}),
                search("", **{"filter[run_iteration]": 1}),
            ),
            (
                "dataset page",
                f"/llm/datasets/{info.dataset_id}",
                f"{API}/{info.project_id}/datasets/{info.dataset_id}/records?page[limit]=50",
            ),
        ]
        if arguments.runs > 1:
            # The API's answer lists every shared record's changes (100,000 here): its time
            # is mostly that document, where the page shows 25 records.
            cases.append(
                (
                    "comparison, run 1 against run 2",
                    f"/llm/experiments/compare?a={experiment_id}&run_a=1&b={experiment_id}&run_b=2",
                    f"{API}/experiments/compare?"
                    + urlencode({"a": experiment_id, "run_a": 1, "b": experiment_id, "run_b": 2}),
                )
            )
            cases.append(
                (
                    "comparison, all runs against all runs",
                    f"/llm/experiments/compare?a={experiment_id}&b={experiment_id}",
                    f"{API}/experiments/compare?"
                    + urlencode({"a": experiment_id, "b": experiment_id}),
                )
            )
        print(
            f"{arguments.records} records x {arguments.runs} runs; in-process (TestClient), "
            f"median of {arguments.repeat}; target <= {TARGET * 1000:.0f} ms per page",
            flush=True,
        )
        missed = 0
        for name, url, api_url in cases:
            cold, ours = timed(client, url, arguments.repeat, once_if_slow=False)
            theirs = _api_time(client, api_url, arguments.repeat)
            verdict = "OK" if ours <= TARGET else "MISSED"
            missed += ours > TARGET
            print(
                f"{name}: {ours * 1000:.0f} ms (cold {cold * 1000:.0f} ms) -> {verdict}; "
                f"API {theirs}",
                flush=True,
            )
    sys.exit(1 if missed else 0)


def _api_time(client: Any, url: str, repeat: int) -> str:
    cold, median = timed(client, url, repeat, once_if_slow=True)
    return f"{median * 1000:.0f} ms" + (" (once: slow)" if cold > SLOW else "")


if __name__ == "__main__":
    main()
