"""The schema, in SQLAlchemy Core. Column names live here and nowhere else.

Portable across SQLite and PostgreSQL: string UUID keys, ``JSON`` columns, timezone-aware
timestamps, and partial indexes declared for both dialects. Alembic migrations in
``migrations/versions`` create exactly these tables; a test checks they agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("current_version", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    # Soft-deleted datasets keep their rows, so the name is unique among live ones only.
    Index(
        "uq_datasets_live_name",
        "project_id",
        "name",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset_id", String(36), ForeignKey("datasets.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per record per content: a record whose input or expected output changes gets
# a new row valid from the new version, and its old row is closed (``version_to``). Any
# past version V is the rows with version_from <= V < version_to (or version_to NULL).
dataset_records = Table(
    "dataset_records",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(36), ForeignKey("datasets.id"), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("version_from", Integer, nullable=False),
    Column("version_to", Integer, nullable=True),
    Column("input", JSON, nullable=True),
    Column("expected_output", JSON, nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("canonical_id", String(64), nullable=True),
    Index("ix_dataset_records_version", "dataset_id", "version_from", "version_to"),
    Index("ix_dataset_records_record", "dataset_id", "record_id"),
    Index("ix_dataset_records_hash", "dataset_id", "content_hash"),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("dataset_id", String(36), ForeignKey("datasets.id"), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("name", String(400), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("config", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("run_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("parent_experiment_id", String(36), ForeignKey("experiments.id"), nullable=True),
    Column("task_name", String(400), nullable=False, default=""),
    Column("evaluator_names", JSON, nullable=False),
    Column("summary_evaluator_names", JSON, nullable=False),
    Column("sample_size", Integer, nullable=True),
    # "host:pid" of the process running it, so a resume can tell a killed run from a live one.
    Column("runner", String(300), nullable=True),
    # Rows and evaluations written so far, kept by every writer in the same transaction:
    # a search compares them with what its aggregates were built from, in one lookup.
    Column("row_count", Integer, nullable=False, server_default="0"),
    Column("evaluation_count", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_experiments_name", "project_id", "name"),
    Index("ix_experiments_created", "created_at"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("run_iteration", Integer, nullable=False),
    UniqueConstraint("experiment_id", "run_iteration", name="uq_runs_iteration"),
)

# The root span of each task call is one *row* (record x run). Child spans (LLM calls,
# tools) share the table, with ``parent_id`` set; only roots are unique per pair, which
# is what makes "every (record, run) exactly once" a constraint and not a hope.
spans = Table(
    "spans",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("run_iteration", Integer, nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("span_id", String(32), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("parent_id", String(32), nullable=True),
    Column("name", String(400), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("duration_ns", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("input", JSON, nullable=True),
    Column("output", JSON, nullable=True),
    Column("expected_output", JSON, nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("error_type", String(400), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_stack", Text, nullable=True),
    Column("retries", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("total_tokens", BigInteger, nullable=True),
    Column("estimated_total_cost", BigInteger, nullable=True),
    Column("model_name", String(200), nullable=True),
    Column("model_provider", String(100), nullable=True),
    # What LLMObs.annotate() put on the root span (metadata, metrics, tags); on a root,
    # "metadata" is the dataset record's metadata, as ddtrace records it.
    Column("annotations", JSON, nullable=True),
    Index(
        "uq_spans_row",
        "experiment_id",
        "run_iteration",
        "record_id",
        unique=True,
        sqlite_where=text("parent_id IS NULL"),
        postgresql_where=text("parent_id IS NULL"),
    ),
)

# Typed value columns, one per metric type, so that queries compare numbers as numbers
# and labels as labels. ``raw_value`` keeps the evaluator's value as returned when the
# typed column alone cannot give it back (a list, a number-like label).
evaluations = Table(
    "evaluations",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("run_iteration", Integer, nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("span_id", String(32), nullable=False),
    Column("label", String(200), nullable=False),
    Column("metric_type", String(16), nullable=False),
    Column("score_value", Float, nullable=True),
    Column("categorical_value", Text, nullable=True),
    Column("boolean_value", Boolean, nullable=True),
    Column("json_value", JSON, nullable=True),
    Column("raw_value", JSON, nullable=True),
    Column("reasoning", Text, nullable=True),
    Column("assessment", String(16), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("tags", JSON, nullable=True),
    Column("error_type", String(400), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_stack", Text, nullable=True),
    Column("timestamp_ms", BigInteger, nullable=False),
    # (experiment, label): a new experiment appends to one range per label, where a
    # record id in the key would scatter every insert across the index.
    Index("ix_evaluations_label", "experiment_id", "label"),
    # A page of search results, or a record's detail, reads a few rows' evaluations; a
    # page read in order tests each row's evaluation of a label (search_compile).
    Index("ix_evaluations_span", "experiment_id", "span_id", "label"),
)

summary_evaluations = Table(
    "summary_evaluations",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("run_iteration", Integer, nullable=False),
    Column("label", String(200), nullable=False),
    Column("metric_type", String(16), nullable=False),
    Column("score_value", Float, nullable=True),
    Column("categorical_value", Text, nullable=True),
    Column("boolean_value", Boolean, nullable=True),
    Column("json_value", JSON, nullable=True),
    Column("raw_value", JSON, nullable=True),
    Column("reasoning", Text, nullable=True),
    Column("assessment", String(16), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("tags", JSON, nullable=True),
    Column("error_type", String(400), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_stack", Text, nullable=True),
    Column("timestamp_ms", BigInteger, nullable=False),
    Index("ix_summary_evaluations_run", "experiment_id", "run_iteration"),
)

# Per record and facet, the across-run aggregate that `@multi_run_avg` / `@multi_run_mode`
# queries select on, so that they read one row per record instead of every run's rows.
# Kept by `aggregates.refresh_record_aggregates` when a query finds it stale: only the
# records whose rows or evaluations changed since the last refresh are recomputed.
MODE_INDEX_LENGTH = 200
"""Modes up to this many characters are in the mode index (see ``ix_record_aggregates_mode``)."""

record_aggregates = Table(
    "record_aggregates",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    Column("facet", String(220), primary_key=True),
    Column("record_id", String(64), primary_key=True),
    Column("idx", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("mean", Float, nullable=True),
    Column("mode", Text, nullable=True),
    # Evaluation facets: which kinds of value the record's evaluations of the label hold
    # (``aggregates.KIND_BITS``). A refresh that recomputes only some records learns from
    # the old and new bits how each label's tally of kinds changed (see experiment_facets).
    Column("kinds", Integer, nullable=True),
    # Covering indexes for multi-run search, whose leaves are sets of (idx, record_id):
    # one range of an index each, in page order within one value (see search_compile).
    # ``n`` and ``errors`` last: the summary's passes over a label's records (means,
    # spread, histogram, pass@k) then read only this index (summary_figures).
    Index(
        "ix_record_aggregates_mean",
        "experiment_id",
        "facet",
        "mean",
        "idx",
        "record_id",
        "n",
        "errors",
    ),
    Index(
        "ix_record_aggregates_mode",
        "experiment_id",
        "facet",
        "mode",
        "idx",
        "record_id",
        # PostgreSQL refuses index entries over about 2.7 kB: long labels stay out.
        sqlite_where=text(f"length(mode) <= {MODE_INDEX_LENGTH}"),
        postgresql_where=text(f"length(mode) <= {MODE_INDEX_LENGTH}"),
    ),
    Index("ix_record_aggregates_record", "experiment_id", "record_id"),
    # One record's aggregate of a label, found by the record's position: a multi-run AND
    # tests each record of its equality leaf against its other leaves here
    # (search_compile, ``QueryCompiler._driven``). An integer key: a look-up by the
    # primary key compares three long strings at every level of the tree, and takes
    # twice as long.
    Index("ix_record_aggregates_probe", "experiment_id", "facet", "idx", "mean", "record_id"),
)

aggregate_state = Table(
    "aggregate_state",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    # How many rows and evaluations the experiment had at the last rebuild: when the
    # store holds more, the aggregates are stale.
    Column("rows", Integer, nullable=False),
    Column("evaluations", Integer, nullable=False),
    # How many records the rebuild found: the "of M" of a multi-run search.
    Column("records", Integer, nullable=False, server_default="0"),
    # The highest ``spans.pk`` and ``evaluations.pk`` of the experiment that the aggregates
    # include: the next refresh recomputes only the records of rows past them. NULL (a
    # store migrated from before 0009) means unknown, and the next refresh rebuilds all.
    Column("row_mark", BigInteger, nullable=True),
    Column("evaluation_mark", BigInteger, nullable=True),
)

# Per run and facet, the totals of that run's rows, so that a summary reads a few rows per
# run instead of grouping every evaluation by run (``run_aggregates``). ``value`` NULL: the
# facet's totals (status: rows and failed rows; a trace metric: rows with it and their sum;
# an evaluation label: usable values, errors, numbers, booleans, True values, and the sum,
# least and greatest of the numbers); ``value`` a text: how many of the
# run's evaluations of the label have that categorical value (``n``). No primary key:
# a categorical value may be longer than an index entry can be.
run_aggregates = Table(
    "run_aggregates",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("run_iteration", Integer, nullable=False),
    Column("facet", String(220), nullable=False),
    Column("value", Text, nullable=True),
    Column("n", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("numbers", BigInteger, nullable=False),
    Column("booleans", BigInteger, nullable=False),
    Column("trues", BigInteger, nullable=False),
    Column("total", Float, nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    Index("ix_run_aggregates_run", "experiment_id", "run_iteration", "facet"),
)

# Per evaluation facet, how many records have each (runs, passes) — ``record_aggregates``'
# ``n`` and ``round(mean x n)`` — and, in rows of their own, each ``mode``: pass@k and the
# mode of record modes without a pass over the records (``record_tallies.py``).
record_tallies = Table(
    "record_tallies",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("facet", String(220), nullable=False),
    Column("runs", Integer, nullable=True),
    Column("passes", Integer, nullable=True),
    Column("mode", Text, nullable=True),
    Column("records", BigInteger, nullable=False),
    Index("ix_record_tallies_facet", "experiment_id", "facet"),
)

# Per run and token column (``total_tokens``, ``input_tokens``, ``output_tokens``), how many
# of the run's rows report each token count: a row query on one token facet is counted from
# these (one entry per distinct count) instead of one index entry per row
# (``token_counts.py``). Kept with ``run_aggregates``, to the same marks. Rows without the
# metric have no entry. SQLite stores the table in its primary key (``WITHOUT ROWID``), so
# that a range of counts is read from the key alone.
run_token_counts = Table(
    "run_token_counts",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    Column("facet", String(24), primary_key=True),
    Column("run_iteration", Integer, primary_key=True),
    Column("tokens", BigInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Per label and run, how many usable scores fall in each bucket of width 1/1024 (the
# extreme ones clamped into two end buckets): a row query on one score label is counted
# from the buckets its range covers, and only the two at its ends are counted value by
# value (``score_counts.py``). Kept with ``run_aggregates``, to the same marks.
run_score_counts = Table(
    "run_score_counts",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    Column("label", String(200), primary_key=True),
    Column("run_iteration", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# The marks ``run_aggregates`` were last brought up to: a refresh that finds
# ``aggregate_state`` at the same marks adds only what lies past them; else (rows reopened,
# a rebuild) it recomputes every run (``run_aggregates.py``).
run_aggregate_state = Table(
    "run_aggregate_state",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    Column("row_mark", BigInteger, nullable=False),
    Column("evaluation_mark", BigInteger, nullable=False),
)

# Looked up by the HTTP ingestion (`store.sql.ingest`): a metric names its span by id, and a
# span must not be stored twice when a client re-posts it. Unique: span ids are random
# 64-bit numbers, one per span of an experiment.
Index("uq_spans_span", spans.c.experiment_id, spans.c.span_id, unique=True)
# Rows (root spans) in page order, with the trace metrics that row-level searches test:
# a page of `run_iteration:1 @trace.total_tokens:>1000` reads the index in order and stops
# after the page, and its count reads only the index.
Index(
    "ix_spans_root_order",
    spans.c.experiment_id,
    spans.c.run_iteration,
    spans.c.idx,
    spans.c.total_tokens,
    spans.c.estimated_total_cost,
    spans.c.duration_ns,
    # Last, so that a set of matching rows (a row query with evaluation terms, see
    # search_compile) is read off this index without visiting the table.
    spans.c.span_id,
    # Always NULL here. SQLite (3.40) does not see that a partial index answers the
    # query's own `parent_id IS NULL`, and steps to the table row for each entry unless
    # the column is in the index: a count then costs two thirds more.
    spans.c.parent_id,
    sqlite_where=text("parent_id IS NULL"),
    postgresql_where=text("parent_id IS NULL"),
)
# The count of `run_iteration:1 @trace.total_tokens:>1000`: one range of entries half the
# size of ix_spans_root_order's, where that index would be read for the whole run. The
# page still walks ix_spans_root_order in page order (search._search_rows). Span id last,
# as there: a row query with evaluation terms reads its token term's set of rows off this
# index without visiting the table.
Index(
    "ix_spans_root_tokens",
    spans.c.experiment_id,
    spans.c.run_iteration,
    spans.c.total_tokens,
    spans.c.span_id,
    spans.c.parent_id,  # see ix_spans_root_order
    sqlite_where=text("parent_id IS NULL"),
    postgresql_where=text("parent_id IS NULL"),
)
# Duration percentiles of an experiment's rows: an ``ORDER BY duration_ns OFFSET k`` reads
# this index in order instead of sorting every row (summary_figures).
Index(
    "ix_spans_root_duration",
    spans.c.experiment_id,
    spans.c.duration_ns,
    spans.c.run_iteration,
    spans.c.parent_id,  # see ix_spans_root_order
    sqlite_where=text("parent_id IS NULL"),
    postgresql_where=text("parent_id IS NULL"),
)
# Row queries on evaluations (`run_iteration:1 @evaluations.custom.x:>0.5`): one range of
# one of these covering indexes per term, (label, run, value, span) in the column of the
# label's type. Partial, so that each evaluation is in one of them and an error in none;
# a query repeats the condition (search_compile) so that the database may use them.
EVALUATION_VALUE_INDEXES = {
    "score_value": "ix_evaluations_score",
    "boolean_value": "ix_evaluations_boolean",
    "categorical_value": "ix_evaluations_categorical",
}


def evaluation_value_condition(column: str) -> str:
    """The partial condition of ``column``'s index: a value of that type, not an error.

    PostgreSQL cannot index arbitrarily long text: labels over ``MODE_INDEX_LENGTH``
    characters stay out, as long modes do.
    """
    short = f" AND length({column}) <= {MODE_INDEX_LENGTH}" if column == "categorical_value" else ""
    return f"{column} IS NOT NULL AND error_type IS NULL{short}"


for _column, _name in EVALUATION_VALUE_INDEXES.items():
    Index(
        _name,
        evaluations.c.experiment_id,
        evaluations.c.label,
        evaluations.c.run_iteration,
        evaluations.c[_column],
        evaluations.c.span_id,
        # Always NULL here: in the index so that a count reads no table row, as
        # parent_id in ix_spans_root_order.
        evaluations.c.error_type,
        sqlite_where=text(evaluation_value_condition(_column)),
        postgresql_where=text(evaluation_value_condition(_column)),
    )
# The children of a trace, whose tokens and cost roll up onto its root. Partial: rows
# without child spans (most of them) cost this index nothing.
Index(
    "ix_spans_child_trace",
    spans.c.experiment_id,
    spans.c.trace_id,
    sqlite_where=text("parent_id IS NOT NULL"),
    postgresql_where=text("parent_id IS NOT NULL"),
)

# Every evaluation metric posted over HTTP, by key: a row metric by its span, a summary
# metric by its run (``span_id`` empty). Spans and metrics arrive separately and in any
# order, so a metric whose span has not come yet waits here (``pending``) with its values,
# and moves to ``evaluations`` when the span is stored; a stored metric keeps only its key
# and timestamp here, so that a re-posted metric is recognised and never stored twice.
posted_evaluations = Table(
    "posted_evaluations",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("span_id", String(32), nullable=False),
    # 0 for row metrics (their span gives the run); the run of a summary metric.
    Column("run_iteration", Integer, nullable=False),
    Column("pending", Boolean, nullable=False),
    Column("trace_id", String(32), nullable=True),
    Column("label", String(200), nullable=False),
    Column("metric_type", String(16), nullable=False),
    Column("score_value", Float, nullable=True),
    Column("categorical_value", Text, nullable=True),
    Column("boolean_value", Boolean, nullable=True),
    Column("json_value", JSON, nullable=True),
    Column("raw_value", JSON, nullable=True),
    Column("reasoning", Text, nullable=True),
    Column("assessment", String(16), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("tags", JSON, nullable=True),
    Column("error_type", String(400), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_stack", Text, nullable=True),
    Column("timestamp_ms", BigInteger, nullable=False),
    Index(
        "uq_posted_evaluations_key",
        "experiment_id",
        "span_id",
        "run_iteration",
        "label",
        unique=True,
    ),
)

# What an experiment offers to search, found when its aggregates are rebuilt: evaluation
# labels with their metric type (by the aggregation rules) and record tag keys.
experiment_facets = Table(
    "experiment_facets",
    metadata,
    Column("experiment_id", String(36), ForeignKey("experiments.id"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("metric_type", String(16), nullable=True),
    # Evaluation labels: how many records hold each kind of value (``aggregates.KIND_BITS``
    # names), so that an incremental refresh keeps ``metric_type`` exact without reading
    # every evaluation of the label again.
    Column("record_kinds", JSON(none_as_null=True), nullable=True),
)

# Keys of `assay serve`. Only the SHA-256 hash of a key is kept, so a leaked store gives
# away no key; ``prefix`` (the key's first characters) lets people tell keys apart.
# ``projects`` lists the project names a key may use, or is NULL for every project.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("projects", JSON(none_as_null=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # A revoked key keeps its row (and its name, for the record); live names are unique.
    Index(
        "uq_api_keys_live_name",
        "name",
        unique=True,
        sqlite_where=text("revoked_at IS NULL"),
        postgresql_where=text("revoked_at IS NULL"),
    ),
)

# The experiment pinned as the baseline of a project and dataset (`assay baseline set`),
# one per pair: what `assay gate` compares a candidate with when it is given no baseline.
baselines = Table(
    "baselines",
    metadata,
    Column("project_id", String(36), ForeignKey("projects.id"), primary_key=True),
    Column("dataset_id", String(36), ForeignKey("datasets.id"), primary_key=True),
    Column("experiment_id", String(36), ForeignKey("experiments.id"), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)

# The ddtrace posts a server with a queue (``assay serve``, by default) has answered but
# not written yet, as the client sent them: the ingest writer stores each one here before
# answering, then writes many of them at once and deletes them in that same transaction.
# What a stopped or killed server leaves here is written when it starts again.
ingest_journal = Table(
    "ingest_journal",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # "events" (an experiment events post, ``key`` its experiment) or "spans" (the intake).
    Column("kind", String(16), nullable=False),
    Column("key", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    # Why writing it failed, when it did: it stays, and is tried again at the next start.
    Column("error", Text, nullable=True),
)
