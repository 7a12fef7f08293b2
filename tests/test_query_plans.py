"""The hot queries read indexes, not whole tables: their plans on PostgreSQL and SQLite.

Each hot read (the experiment summary, a multi-run search, a row-level search page and its
count, the records page's record summaries) runs for real on a seeded store of three
experiments, with its statements captured as the driver gets them; each statement is
then explained (``EXPLAIN (FORMAT JSON)`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on
SQLite, after ``ANALYZE``). The checks are on what a plan scans, not on its text: no
statement reads the rows table (``spans``) or ``evaluations`` from end to end, and the
indexes made for each read are among those it uses. PostgreSQL explains with sequential
scans discouraged (``enable_seqscan = off``): on a test-sized store a sequential scan is
often cheapest and rightly chosen, while the question here is whether an index *can*
serve each statement, as it must at a million rows. Which exact plan the database picks
beyond that is its business.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from assay import LLMObs
from assay.store.sql.backend import SqlBackend
from assay.store.sql.browse import experiment_totals
from assay.store.sql.ingest.write import stored_roots
from assay.store.sql.side_count import SideCounter
from assay.store.sql.summary_figures import summary_figures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from query import synthetic_experiment, synthetic_rows

from backends import STORES, postgres_database

MULTI_RUN = (
    "@multi_run_avg.@evaluations.custom.random_evaluator:>=0.5 "
    "@multi_run_mode.@evaluations.custom.sentiment_evaluator:positive"
)
ROW_LEVEL = "run_iteration:1 @trace.total_tokens:>1000"
RECORDS_PAGE = "@multi_run_mode.@status:*"
"""What the web UI's records page searches for when the query box is empty."""
BIG_TABLES = ("spans", "evaluations")
RECORDS, RUNS = 1000, 2


@dataclass
class Plan:
    """What the statements of one read scan: (table, index or None for a full scan)."""

    scans: set[tuple[str, str | None]] = field(default_factory=set)
    statements: list[tuple[str, set[tuple[str, str | None]]]] = field(default_factory=list)

    def full_scans(self, tables: tuple[str, ...]) -> dict[str, str]:
        """Table to the first statement that reads all of it (the failure's explanation)."""
        found: dict[str, str] = {}
        for statement, scans in self.statements:
            for table, index in scans:
                if table in tables and index is None:
                    found.setdefault(table, statement)
        return found

    @property
    def indexes(self) -> set[str]:
        return {index for _, index in self.scans if index}

    @property
    def tables(self) -> set[str]:
        return {table for table, _ in self.scans}


def _postgresql_scans(node: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    relation = node.get("Relation Name")
    kind = node.get("Node Type")
    if kind == "Seq Scan":
        yield relation, None
    elif relation is not None and node.get("Index Name"):  # Index Scan, Index Only Scan
        yield relation, node["Index Name"]
    elif kind == "Bitmap Index Scan":  # under a Bitmap Heap Scan of its table
        yield _bitmap_table(node), node["Index Name"]
    for child in node.get("Plans", ()):
        yield from _postgresql_scans(child)


def _bitmap_table(node: dict[str, Any]) -> str:
    # A bitmap index scan names its index only; the index names say their table.
    name = str(node["Index Name"])
    for table in (
        "record_aggregates",
        "run_token_counts",
        "run_score_counts",
        "spans",
        "evaluations",
    ):
        if table in name:
            return table
    return name


_SQLITE_SCAN = re.compile(r"^(SCAN|SEARCH) (\w+)(?: AS \w+)?(?: USING (?:COVERING )?INDEX (\w+))?")


def _sqlite_scans(detail: str, aliases: dict[str, str]) -> Iterator[tuple[str, str | None]]:
    found = _SQLITE_SCAN.match(detail)
    if found is None:
        return
    kind, table, index = found.groups()
    table = aliases.get(table, table)
    if index is None and ("INTEGER PRIMARY KEY" in detail or "PRIMARY KEY" in detail):
        index = "primary key"
    if kind == "SCAN" and table in BIG_TABLES:
        index = None  # SCAN reads all of it, in an index's order or not
    yield table, index


def explain(engine: Engine, statement: str, parameters: Any) -> set[tuple[str, str | None]]:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            # On a few thousand rows a sequential scan is often cheapest, and PostgreSQL
            # rightly takes it; what must hold at any size is that an index serves the
            # statement, which is what it then picks when it can.
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            [plan] = connection.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters
            ).scalar_one()
            return set(_postgresql_scans(plan["Plan"]))
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    # One table may have several aliases (a multi-run AND reads record_aggregates twice).
    aliases = {alias: table for table, alias in re.findall(r"\b(\w+) AS (\w+)", statement)}
    scans: set[tuple[str, str | None]] = set()
    for row in rows:
        scans.update(_sqlite_scans(str(row[-1]), aliases))
    return scans


@contextmanager
def planned(engine: Engine) -> Iterator[Plan]:
    """Capture the SELECTs run inside the block, and explain them when it ends."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    plan = Plan()
    try:
        yield plan
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    for statement, parameters in captured:
        scans = explain(engine, statement, parameters)
        plan.statements.append((statement, scans))
        plan.scans |= scans


def seed(llmobs: type[LLMObs], name: str, rng: random.Random) -> str:
    """An experiment of RECORDS x RUNS rows, three evaluators each: the benchmarks' data
    (``benchmarks/query.py``, which ``scale.py`` shares)."""
    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    info, ids, runs = synthetic_experiment(backend, name, RECORDS, RUNS, project="test-project")
    backend.write_rows(list(synthetic_rows(info.id, ids, runs, rng)))
    backend.refresh_aggregates(info.id)
    return str(info.id)


def analyze(engine: Engine) -> None:
    """On PostgreSQL, statistics and the visibility map index-only scans rely on: what
    autovacuum gives a store that has been in use a while. A SQLite store has no
    statistics (Assay never runs ANALYZE), and its plans are checked without them."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.execute(text("VACUUM (ANALYZE)"))


@pytest.fixture(scope="module", params=STORES)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A store of three experiments, seeded once for the module (every test only reads
    it): its URL, and the id of the middle experiment, which is searched."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('plans')}/assay.db"
        else:
            url = stack.enter_context(postgres_database())
        with pytest.MonkeyPatch.context() as environment:
            environment.setenv("ASSAY_HOME", str(tmp_path_factory.mktemp("plans-home")))
            environment.setenv("ASSAY_DATABASE_URL", url)
            LLMObs.enable(project_name="test-project")
            try:
                rng = random.Random(8)
                ids = [seed(LLMObs, f"plans-{n}", rng) for n in range(3)]
                backend = LLMObs._backend
                assert isinstance(backend, SqlBackend)
                analyze(backend.engine)
            finally:
                LLMObs.disable()
        yield url, ids[1]


@pytest.fixture
def store(seeded: tuple[str, str]) -> Iterator[tuple[SqlBackend, str]]:
    url, experiment_id = seeded
    backend = SqlBackend(url)
    # Counts inline, on the engine whose statements ``planned`` captures (beside the page,
    # a count runs the same statement on an engine of its own).
    backend._counter = SideCounter(threads=1)
    try:
        yield backend, experiment_id
    finally:
        backend.close()


def plan_of(backend: SqlBackend, read: Callable[[], Any]) -> Plan:
    with planned(backend.engine) as plan:
        read()
    assert plan.statements, "the read ran no SELECT"
    return plan


def test_the_summary_reads_only_the_aggregates(store: tuple[SqlBackend, str]) -> None:
    backend, experiment_id = store
    plan = plan_of(backend, lambda: experiment_totals(backend.engine, [experiment_id]))
    # One row per record and label, read whole: a scan of the experiment's aggregates (or
    # of the table, when the experiment is most of it) is the plan, and it is O(records).
    assert not plan.tables & set(BIG_TABLES), plan.scans


def test_the_summary_figures_read_aggregates_and_indexes(store: tuple[SqlBackend, str]) -> None:
    """The web UI's summary: per-run totals, record aggregates through their covering index,
    duration percentiles along an index; one run's scores along their value index."""
    backend, experiment_id = store
    info = backend.get_experiment(experiment_id)

    def figures(run: int | None) -> Callable[[], Any]:
        def read() -> Any:
            with backend.engine.connect() as connection:
                return summary_figures(connection, info, run=run)

        return read

    every = plan_of(backend, figures(None))
    assert every.full_scans((*BIG_TABLES, "record_aggregates")) == {}, every.scans
    assert "evaluations" not in every.tables, every.scans
    assert {index for table, index in every.scans if table == "spans"} == {
        "ix_spans_root_duration"
    }, every.scans
    assert "ix_record_aggregates_mean" in every.indexes, every.scans
    one = plan_of(backend, figures(1))
    assert one.full_scans((*BIG_TABLES, "record_aggregates")) == {}, one.scans
    assert {index for table, index in one.scans if table == "evaluations"} == {
        "ix_evaluations_score"
    }, one.scans
    assert "record_aggregates" not in one.tables, one.scans


def test_a_multi_run_search_reads_the_aggregate_indexes(store: tuple[SqlBackend, str]) -> None:
    backend, experiment_id = store
    plan = plan_of(backend, lambda: backend.search(experiment_id, MULTI_RUN, limit=50))
    assert plan.full_scans((*BIG_TABLES, "record_aggregates")) == {}
    # The equality leaf is the mode index's range; each of its records is tested against
    # the average by the probe index (PostgreSQL may rather join the mean index's range).
    assert "ix_record_aggregates_mode" in plan.indexes, plan.scans
    if backend.engine.dialect.name == "sqlite":
        assert ("record_aggregates", "ix_record_aggregates_probe") in plan.scans, plan.scans
    else:
        assert plan.indexes & {"ix_record_aggregates_probe", "ix_record_aggregates_mean"}
    assert "evaluations" not in plan.tables, plan.scans


@pytest.mark.parametrize("by_value", [True, False], ids=["token-counts", "walk"])
def test_a_row_level_count_reads_the_token_counts_or_index_and_its_page_the_row_order(
    store: tuple[SqlBackend, str], by_value: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count of ``run_iteration:1 @trace.total_tokens:>1000`` reads the run's counts
    of rows by token count (a range of ``run_token_counts``' key), never a row; where those
    do not include every row stored, it is one range of the narrow token index. The page
    walks the row-order index in page order (on SQLite, whose planner would otherwise take
    the token index and sort every match)."""
    from assay.store.sql import search

    if not by_value:
        monkeypatch.setattr(search, "count_by_tokens", lambda *arguments: None)
    backend, experiment_id = store
    plan = plan_of(backend, lambda: backend.search(experiment_id, ROW_LEVEL, limit=50))
    page = backend.search(experiment_id, ROW_LEVEL, limit=50)
    assert page.total > 50  # so the count ran, and was explained too
    assert plan.full_scans(BIG_TABLES) == {}
    sqlite = backend.engine.dialect.name == "sqlite"
    [walk] = [
        scans
        for sql, scans in plan.statements
        if "LIMIT" in sql and "span_id IN" not in sql and "count(" not in sql.lower()
    ]
    if sqlite:
        assert walk == {("spans", "ix_spans_root_order")}, plan.statements
    if by_value:
        [counted] = [scans for sql, scans in plan.statements if "run_token_counts" in sql]
        by_key = "primary key" if sqlite else "pk_run_token_counts"
        assert ("run_token_counts", by_key) in counted, counted
        assert not {table for table, _ in counted} & set(BIG_TABLES), counted
        return
    counts = [(sql, scans) for sql, scans in plan.statements if "count(" in sql.lower()]
    # The probe (are there enough matches to walk the page order?) counts at most a few.
    [probe] = [scans for sql, scans in counts if "LIMIT" in sql]
    [(count_sql, count)] = [(sql, scans) for sql, scans in counts if "LIMIT" not in sql]
    if sqlite:
        # The probe also scans its own few rows (``anon_1``) to count them.
        assert probe - {("anon_1", None)} == count == {("spans", "ix_spans_root_tokens")}
    else:
        assert {index for _, index in count} & {"ix_spans_root_tokens", "ix_spans_root_order"}
    # The run is tested once: SQLite would test a second copy on every entry it counts.
    assert count_sql.count("spans.run_iteration") == 1, count_sql


def test_a_score_count_reads_the_buckets_and_its_end_buckets_scores(
    store: tuple[SqlBackend, str],
) -> None:
    """The count of ``run_iteration:1 @evaluations.custom.random_evaluator:>0.5`` reads the
    run's buckets by key, and the scores of the bucket at the range's end from the score
    index; the label's booleans from theirs."""
    backend, experiment_id = store
    query = "run_iteration:1 @evaluations.custom.random_evaluator:>0.5"
    plan = plan_of(backend, lambda: backend.search(experiment_id, query, limit=50))
    assert plan.full_scans(BIG_TABLES) == {}
    [counted] = [scans for sql, scans in plan.statements if "run_score_counts" in sql]
    sqlite = backend.engine.dialect.name == "sqlite"
    by_key = "primary key" if sqlite else "pk_run_score_counts"
    assert ("run_score_counts", by_key) in counted, counted
    assert {"ix_evaluations_score", "ix_evaluations_boolean"} <= {i for _, i in counted}, counted


@pytest.mark.parametrize(
    "query",
    [
        "@evaluations.custom.exact_match:false",
        "run_iteration:1 @evaluations.custom.sentiment_evaluator:positive",
    ],
)
def test_a_label_value_count_reads_the_run_totals(
    store: tuple[SqlBackend, str], query: str
) -> None:
    """The count of one boolean or categorical value of a label is read off the runs'
    totals (``run_aggregates``), whose rows are few: no statement counts evaluations."""
    backend, experiment_id = store
    plan = plan_of(backend, lambda: backend.search(experiment_id, query, limit=50))
    assert backend.search(experiment_id, query, limit=50).total > 50
    assert plan.full_scans(BIG_TABLES) == {}
    assert [sql for sql, _ in plan.statements if "run_aggregates" in sql], plan.statements
    counts = [sql for sql, _ in plan.statements if "count(" in sql.lower()]
    assert not [sql for sql in counts if "FROM evaluations" in sql], counts


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("run_iteration:1 @evaluations.custom.random_evaluator:>0.5", "ix_evaluations_score"),
        ("@evaluations.custom.exact_match:*", "ix_evaluations_boolean"),
        (
            "@evaluations.custom.sentiment_evaluator:positive @trace.total_tokens:>1000",
            "ix_evaluations_categorical",
        ),
    ],
)
def test_row_queries_on_evaluations_read_the_typed_value_indexes(
    store: tuple[SqlBackend, str], query: str, wanted: str
) -> None:
    """Each evaluation term is one range of its type's covering index; the page reads the
    rows in order and looks up each row's evaluation by (span, label)."""
    backend, experiment_id = store
    plan = plan_of(backend, lambda: backend.search(experiment_id, query, limit=50))
    assert backend.search(experiment_id, query, limit=50).total > 50
    assert plan.full_scans(BIG_TABLES) == {}
    assert {wanted, "ix_spans_root_order"} <= plan.indexes, plan.scans
    if backend.engine.dialect.name == "sqlite":
        # The walk looks each row's evaluation up by its span, never by a value index
        # (which covers what a look-up reads, and would be scanned for every row).
        [walk] = [scans for sql, scans in plan.statements if "EXISTS" in sql]
        assert walk == {("spans", "ix_spans_root_order"), ("evaluations", "ix_evaluations_span")}


def test_the_records_page_reads_each_record_by_key(store: tuple[SqlBackend, str]) -> None:
    backend, experiment_id = store
    plan = plan_of(backend, lambda: backend.search(experiment_id, RECORDS_PAGE, limit=25))
    assert plan.full_scans((*BIG_TABLES, "record_aggregates")) == {}


def test_comparison_values_read_value_indexes_and_aggregates(
    store: tuple[SqlBackend, str],
) -> None:
    """What a comparison reads: one run's values off the typed value indexes; across runs,
    the labels' aggregates and the score label's range of ``ix_evaluations_label``."""
    backend, experiment_id = store
    backend.refresh_aggregates(experiment_id, only_if_stale=True)
    one = plan_of(backend, lambda: backend.comparison_values(experiment_id, run=1))
    assert one.full_scans(BIG_TABLES) == {}, one.scans
    values = {"ix_evaluations_score", "ix_evaluations_boolean", "ix_evaluations_categorical"}
    if backend.engine.dialect.name == "sqlite":
        assert values <= one.indexes, one.scans
    else:
        assert one.indexes & values, one.scans
    every = plan_of(backend, lambda: backend.comparison_values(experiment_id, run=None))
    assert every.full_scans((*BIG_TABLES, "record_aggregates")) == {}, every.scans
    assert "ix_evaluations_label" in every.indexes, every.scans
    assert "record_aggregates" in every.tables, every.scans


def test_the_ingest_look_up_of_roots_reads_the_span_key(store: tuple[SqlBackend, str]) -> None:
    """Which of a post's spans are stored roots: by (experiment, span), never a range of a
    partial root index, which a young table's missing statistics could make PostgreSQL
    prefer and which holds every root of the experiment."""
    backend, experiment_id = store
    span_ids = [row.span_id for row in backend.experiment_rows(experiment_id)[:6]]

    def read() -> Any:
        with backend.engine.connect() as connection:
            return stored_roots(connection, experiment_id, [*span_ids, "no-such-span"])

    plan = plan_of(backend, read)
    assert sorted(read()) == sorted(span_ids)
    assert plan.scans == {("spans", "uq_spans_span")}, plan.scans
    # What keeps it so without statistics: no condition that a partial index answers.
    [(sql, _)] = plan.statements
    assert "parent_id IS" not in sql, sql
