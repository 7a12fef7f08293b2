"""Datasets from files and tables: CSV (as ddtrace reads it), JSON Lines, pandas DataFrames.

Every loader checks the whole input before anything is stored, and names the line or row
of the first bad record.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.dataset import Dataset, DatasetRecord, checked_records, create_and_push
from assay.errors import DatasetError
from assay.store.backend import Backend
from assay.store.records import JSON, ProjectInfo

if TYPE_CHECKING:
    import pandas as pd

_CSV_FIELD_LIMIT = 10 * 1024 * 1024


def _tabular_records(
    rows: Iterator[tuple[str, Mapping[str, Any]]],
    input_data_columns: Sequence[str],
    expected_output_columns: Sequence[str],
    metadata_columns: Sequence[str],
    id_column: str | None = None,
) -> list[DatasetRecord]:
    """Records from labelled table rows, shaped as ddtrace's CSV loader shapes them."""
    return checked_records(
        [
            (
                label,
                {
                    "input_data": {column: row[column] for column in input_data_columns},
                    # Always a dict, even for one column or none, as in ddtrace.
                    "expected_output": {column: row[column] for column in expected_output_columns},
                    "metadata": {column: row[column] for column in metadata_columns},
                    **({"id": row[id_column]} if id_column else {}),
                },
            )
            for label, row in rows
        ]
    )


def _check_columns(
    input_data_columns: Sequence[str], wanted: Sequence[str], present: Sequence[str], source: str
) -> None:
    if not input_data_columns:
        raise DatasetError(f"input_data_columns is empty; name at least one column of {source}")
    missing = [column for column in wanted if column not in present]
    if missing:
        raise DatasetError(
            f"Column {', '.join(repr(c) for c in missing)} not found in {source}; "
            f"its columns are {', '.join(repr(c) for c in present)}"
        )


def create_dataset_from_csv(
    backend: Backend,
    project: ProjectInfo,
    csv_path: str | Path,
    dataset_name: str,
    input_data_columns: Sequence[str],
    expected_output_columns: Sequence[str] | None = None,
    metadata_columns: Sequence[str] | None = None,
    csv_delimiter: str = ",",
    description: str = "",
    deduplicate: bool = True,
    id_column: str | None = None,
) -> Dataset:
    """A dataset from a CSV file with a header row; every value is a string.

    Each row becomes ``input_data = {column: value}`` over ``input_data_columns``,
    ``expected_output`` likewise (always a dict), ``metadata`` likewise, and the id from
    ``id_column`` when given. The file is checked whole before the dataset is created.
    """
    expected_columns, metadata_columns = expected_output_columns or [], metadata_columns or []
    source = f"CSV file {str(csv_path)!r}"
    previous_limit = csv.field_size_limit()
    # A prompt or a document in one cell easily passes csv's default 128 kB field limit.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=csv_delimiter)
            present = list(reader.fieldnames or [])
            if not present:
                raise DatasetError(f"{source} has no header row; its first line must name columns")
            wanted = [*input_data_columns, *expected_columns, *metadata_columns]
            _check_columns(
                input_data_columns, [*wanted, *([id_column] if id_column else [])], present, source
            )
            rows = [(f"Line {reader.line_num} of {source}", row) for row in reader]
    except csv.Error as error:
        raise DatasetError(f"{source} cannot be read: {error}") from error
    finally:
        csv.field_size_limit(previous_limit)
    checked = _tabular_records(
        iter(rows), input_data_columns, expected_columns, metadata_columns, id_column
    )
    return create_and_push(backend, project, dataset_name, description, checked, deduplicate)


def create_dataset_from_jsonl(
    backend: Backend,
    project: ProjectInfo,
    path: str | Path,
    dataset_name: str,
    *,
    description: str = "",
    deduplicate: bool = True,
) -> Dataset:
    """A dataset from a JSON Lines file: each line a record as ``Dataset.append`` takes it.

    Blank lines are skipped; the file is checked whole before the dataset is created.
    """
    labelled: list[tuple[str, Mapping[str, Any]]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            label = f"Line {number} of {str(path)!r}"
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{label} is not JSON ({error.msg}); each line must be one record object"
                ) from error
            if not isinstance(value, dict):
                raise DatasetError(
                    f"{label} is a {type(value).__name__}, not an object like "
                    '{"input_data": ..., "expected_output": ...}'
                )
            labelled.append((label, value))
    checked = checked_records(labelled)
    return create_and_push(backend, project, dataset_name, description, checked, deduplicate)


def create_dataset_from_dataframe(
    backend: Backend,
    project: ProjectInfo,
    df: pd.DataFrame,
    dataset_name: str,
    *,
    input_data_columns: Sequence[str],
    expected_output_columns: Sequence[str] | None = None,
    metadata_columns: Sequence[str] | None = None,
    description: str = "",
    deduplicate: bool = True,
) -> Dataset:
    """A dataset from a pandas DataFrame, one record per row, shaped as the CSV loader does.

    Missing values (NaN, NA, NaT) become None and timestamps ISO strings, so every value
    is JSON.
    """
    import pandas as pd

    expected_columns, metadata_columns = expected_output_columns or [], metadata_columns or []
    wanted = [*input_data_columns, *expected_columns, *metadata_columns]
    _check_columns(input_data_columns, wanted, [str(c) for c in df.columns], "the DataFrame")

    def cell(value: Any) -> JSON:
        if isinstance(value, (list, tuple, dict)):
            return value
        if pd.isna(value):
            return None
        return value.isoformat() if isinstance(value, (datetime, date)) else value

    renamed = df.rename(columns=str)
    rows = (
        (f"DataFrame row {number}", {column: cell(row[column]) for column in wanted})
        for number, row in enumerate(renamed.to_dict(orient="records"))
    )
    checked = _tabular_records(rows, input_data_columns, expected_columns, metadata_columns)
    return create_and_push(backend, project, dataset_name, description, checked, deduplicate)
