"""The store itself: migrations, and results that survive a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from assay.store.sql.backend import SqlBackend
from assay.store.sql.engine import head_revision, migrate, open_engine
from assay.store.sql.tables import metadata


def test_migrations_build_exactly_the_declared_schema(store_url: str) -> None:
    engine = open_engine(store_url)
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head_revision()
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def test_opening_twice_does_not_migrate_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/twice.db"
    SqlBackend(url).close()
    backend = SqlBackend(url)
    backend.close()
    names = set(inspect(create_engine(url)).get_table_names())
    assert {"experiments", "spans", "evaluations", "alembic_version"} <= names


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path}/wal.db")
    with backend.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    backend.close()
    assert mode == "wal"


def test_store_folder_is_created(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path}/deep/er/store.db")
    backend.close()
    assert (tmp_path / "deep" / "er" / "store.db").exists()


SLOW_EXPERIMENT = textwrap.dedent(
    """
    import sys, time
    from assay import LLMObs

    def task(input_data, config):
        time.sleep(0.01)
        return input_data

    def same(input_data, output_data, expected_output):
        return output_data == input_data

    LLMObs.enable(project_name="killed")
    dataset = LLMObs.create_dataset(
        dataset_name="numbers", records=[{"input_data": i} for i in range(400)]
    )
    experiment = LLMObs.experiment("killed", task, dataset, [same], runs=3)
    print("started", flush=True)
    experiment.run(jobs=4)
    print("finished", flush=True)
    """
)


def _start(script: str, home: Path) -> subprocess.Popen[str]:
    path = home / "script.py"
    path.write_text(script)
    env = {**os.environ, "ASSAY_HOME": str(home), "ASSAY_PROGRESS": "0"}
    return subprocess.Popen(
        [sys.executable, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_rows(backend: SqlBackend, minimum: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiments = backend.list_experiments()
        if experiments and backend.count_rows(experiments[0].id) >= minimum:
            return experiments[0].id
        time.sleep(0.05)
    raise AssertionError(f"fewer than {minimum} rows stored after {timeout} s")


@pytest.mark.slow
def test_killed_process_keeps_every_committed_row(assay_home: Path) -> None:
    process = _start(SLOW_EXPERIMENT, assay_home)
    reader = SqlBackend(f"sqlite:///{assay_home}/assay.db")
    try:
        experiment_id = _wait_for_rows(reader, 200)
        before = reader.count_rows(experiment_id)
        process.kill()  # SIGKILL: no cleanup of any kind runs
        process.wait(timeout=30)
        rows = reader.experiment_rows(experiment_id)
        # Everything committed before the kill is still there, whole: each row with its
        # evaluation, and no (record, run) twice.
        assert len(rows) >= before
        assert len({(row.record_id, row.run_iteration) for row in rows}) == len(rows)
        assert all(len(row.evaluations) == 1 for row in rows)
        assert all(row.output == row.input_data for row in rows)
        assert len(rows) < 1200
        assert reader.get_experiment(experiment_id).status == "running"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        reader.close()


@pytest.mark.slow
def test_ctrl_c_marks_the_experiment_interrupted_and_keeps_rows(assay_home: Path) -> None:
    process = _start(SLOW_EXPERIMENT, assay_home)
    reader = SqlBackend(f"sqlite:///{assay_home}/assay.db")
    try:
        experiment_id = _wait_for_rows(reader, 100)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode != 0
        assert "KeyboardInterrupt" in stderr
        info = reader.get_experiment(experiment_id)
        assert info.status == "interrupted"
        rows = reader.experiment_rows(experiment_id)
        assert 100 <= len(rows) < 1200
        assert len({(row.record_id, row.run_iteration) for row in rows}) == len(rows)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        reader.close()


def test_seed_example_runs_unchanged_but_for_its_import(assay_home: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "capitals.py"
    text = example.read_text()
    assert "from assay import LLMObs" in text and "ddtrace" not in text
    completed = subprocess.run(
        [sys.executable, str(example)],
        env={**os.environ, "ASSAY_HOME": str(assay_home), "ASSAY_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "View experiment: http://127.0.0.1:8000/llm/experiments/" in completed.stdout
    assert "'datadoghq.com' is not an Assay server" in completed.stderr
    backend = SqlBackend(f"sqlite:///{assay_home}/assay.db")
    try:
        (info,) = backend.list_experiments()
        assert info.name == "capital-cities-test"
        assert info.project_name == "<YOUR_PROJECT>"
        assert info.dataset_name == "capitals-of-the-world"
        assert info.run_count == 5 and len(info.runs) == 5
        assert info.status == "completed"
        rows = backend.experiment_rows(info.id)
        assert len(rows) == 10
        assert {row.output for row in rows} == {"Beijing", "Unknown"}
        summaries = backend.summary_evaluations(info.id)
        assert [(s.run_iteration, s.evaluation.value) for s in summaries] == [
            (n, 1) for n in range(1, 6)
        ]
    finally:
        backend.close()


def test_head_revision_constant_matches_the_migrations() -> None:
    from assay.store.sql.engine import HEAD_REVISION

    assert head_revision() == HEAD_REVISION


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "Cannot read the store URL"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "Cannot open the store"),
        ("mysql+notadriver://x/y", "No database driver"),
    ],
)
def test_bad_store_urls_are_clear_errors(url: str, message: str) -> None:
    from assay.errors import StoreError

    with pytest.raises(StoreError, match=message):
        SqlBackend(url)


def test_every_in_memory_store_is_migrated() -> None:
    """``sqlite://`` names a new, empty database each time it is opened: the second one
    opened in a process must get its tables too (it was taken for migrated already)."""
    for _ in range(2):
        backend = SqlBackend("sqlite://")
        try:
            assert backend.list_experiments() == []
        finally:
            backend.close()
