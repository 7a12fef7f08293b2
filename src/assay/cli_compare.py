"""The ``assay compare``, ``assay gate`` and ``assay baseline`` commands, and what they print.

Registered on the root command by :func:`register`. As in :mod:`assay.cli`, each is a thin
shell over the functions Python code calls: :func:`assay.compare.compare_values`,
:func:`assay.gate.gate_stored` (which finds the baseline with
:func:`assay.baseline.resolve_baseline`) and the store's baseline methods. ``assay gate``
is made for CI, so its exit code is its answer: 0 pass, 1 regression, 3 inconclusive
(with ``--fail-on inconclusive``), and 2 for every error and every bad usage, never 1.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from assay.cli_render import format_aggregate, local_time
from assay.compare import Comparison, compare_values
from assay.errors import AssayError
from assay.gate import gate_stored, junit_xml, markdown_report
from assay.store import open_backend
from assay.store.backend import Backend
from assay.store.records import ExperimentInfo, PinnedBaseline

__all__ = ["register"]

_NOTHING = "—"
_SHOWN_RECORDS = 10
_VERDICT_STYLE = {
    "improved": "green",
    "regressed": "bold red",
    "inconclusive": "yellow",
    "unchanged": "dim",
}

StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="The store: a SQLAlchemy URL, or an Assay server's http(s):// URL (default: "
        "ASSAY_URL, else ASSAY_DATABASE_URL, else $ASSAY_HOME/assay.db).",
    ),
]
LowerIsBetter = Annotated[
    list[str] | None,
    typer.Option(
        "--lower-is-better",
        metavar="LABEL",
        help="An evaluation where smaller is better (latency, cost...); repeat for several.",
    ),
]


class FailOn(StrEnum):
    """What fails ``assay gate`` (a regression always does)."""

    regressed = "regressed"
    inconclusive = "inconclusive"


def register(app: typer.Typer, *, epilog: str) -> None:
    """Add ``compare``, ``gate`` and ``baseline set|show`` to the root command."""
    app.command("compare", epilog=epilog)(compare_command)
    app.command("gate", epilog=epilog)(gate_command)
    baseline_app = typer.Typer(
        help="The experiment `assay gate` compares with when given no `--baseline`: "
        "one pinned per project and dataset.",
        rich_markup_mode="markdown",
        epilog=epilog,
        invoke_without_command=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    baseline_app.callback()(_baseline_help)
    baseline_app.command("set", epilog=epilog)(baseline_set)
    baseline_app.command("show", epilog=epilog)(baseline_show)
    app.add_typer(baseline_app, name="baseline")


# Shared -----------------------------------------------------------------------------------


@contextmanager
def _store(url: str | None) -> Iterator[Backend]:
    backend = open_backend(url)
    try:
        yield backend
    finally:
        backend.close()


def _stdout() -> Console:
    # As in assay.cli: the user's text may hold "[red]" or ":x:", printed as it is.
    return Console(soft_wrap=False, highlight=False, markup=False, emoji=False)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _fail(message: str, code: int) -> NoReturn:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    typer.echo(f"error: {lines[0] if lines else 'failed'}", err=True)
    sys.exit(code)


def _check_run(info: ExperimentInfo, run: int | None, option: str) -> None:
    iterations = [item.run_iteration for item in info.runs]
    if run is not None and run not in iterations:
        runs = f"runs {iterations[0]}..{iterations[-1]}" if iterations else "no runs"
        raise typer.BadParameter(
            f"experiment {info.name!r} ({info.id[:8]}) has {runs}", param_hint=f"'{option}'"
        )


def _assignments(values: Sequence[str] | None, option: str, *, negative: bool) -> dict[str, float]:
    """``["correct=0.8", ...]`` as ``{"correct": 0.8}``; anything else is a usage error."""
    parsed: dict[str, float] = {}
    for value in values or ():
        label, equals, number = value.partition("=")
        try:
            amount = float(number)
        except ValueError:
            amount = math.nan
        if not equals or not label.strip() or not math.isfinite(amount):
            raise typer.BadParameter(
                f"{value!r} is not LABEL=NUMBER (e.g. correct=0.02)", param_hint=f"'{option}'"
            )
        if amount < 0 and not negative:
            raise typer.BadParameter(
                f"{value!r}: the amount must not be negative", param_hint=f"'{option}'"
            )
        parsed[label.strip()] = amount
    return parsed


# assay compare ----------------------------------------------------------------------------


def compare_command(
    a: Annotated[
        str,
        typer.Argument(
            metavar="A", help="The baseline: an experiment id, unique id prefix or name (newest)."
        ),
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="The candidate, given the same way.")],
    run_a: Annotated[
        int | None, typer.Option("--run-a", help="Compare only this run of A (default: all).")
    ] = None,
    run_b: Annotated[
        int | None, typer.Option("--run-b", help="Compare only this run of B (default: all).")
    ] = None,
    lower_is_better: LowerIsBetter = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: a, b, labels (per evaluation), records (per shared record), "
            "only_in_a, only_in_b.",
        ),
    ] = False,
    database_url: StoreUrl = None,
) -> None:
    """Compare experiment B with the baseline A, record by record, or run `--run-b` of B
    with run `--run-a` of A.

    Per evaluation: each side's value, the mean change over the records both have, its
    95% interval and p-value (a paired t test on the record means), and a verdict:
    improved, regressed, unchanged or inconclusive. Then how many records improved,
    regressed or stayed the same, pass→fail flips, label changes and records on one side
    only.
    """
    with _store(database_url) as backend:
        info_a = backend.resolve_experiment(a)
        info_b = backend.resolve_experiment(b)
        _check_run(info_a, run_a, "--run-a")
        _check_run(info_b, run_b, "--run-b")
        comparison = compare_values(
            (info_a, backend.comparison_values(info_a.id, run=run_a)),
            (info_b, backend.comparison_values(info_b.id, run=run_b)),
            run_a=run_a,
            run_b=run_b,
            lower_is_better=lower_is_better or (),
        )
    unknown = sorted(set(lower_is_better or ()) - set(comparison.labels))
    if unknown:
        raise typer.BadParameter(
            f"no evaluation {unknown[0]!r}; labels are {', '.join(comparison.labels) or 'none'}",
            param_hint="'--lower-is-better'",
        )
    if as_json:
        _print_json(comparison.to_dict())
        return
    _stdout().print(comparison_view(comparison, info_a, info_b))


def _signed(value: float | None, *, points: bool = False) -> str:
    if value is None:
        return _NOTHING
    return f"{value * 100:+.1f}" if points else f"{value:+.3g}"


def _p(value: float | None) -> str:
    if value is None:
        return _NOTHING
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def _side(info: ExperimentInfo, runs: list[int], chosen: int | None) -> str:
    which = f"run {chosen} of {len(info.runs)}" if chosen is not None else f"{len(runs)} run(s)"
    return f"{info.name} ({info.id[:8]}, {which}, {info.status})"


def _compact_table(title: str) -> Table:
    # As `assay experiments list`: no rules between columns, so the tables fit a
    # 100-column terminal; on narrower ones the label column folds.
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def comparison_view(comparison: Comparison, a: ExperimentInfo, b: ExperimentInfo) -> RenderableType:
    """``assay compare``: both sides, a line per evaluation, then what moved and why."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("baseline (a)", _side(a, comparison.a.runs, comparison.a.run))
    grid.add_row("candidate (b)", _side(b, comparison.b.runs, comparison.b.run))
    grid.add_row(
        "records",
        f"{len(comparison.records)} on both sides, {len(comparison.only_in_a)} only in a, "
        f"{len(comparison.only_in_b)} only in b",
    )
    parts: list[RenderableType] = [grid, Text(""), _verdicts_table(comparison), Text("")]
    parts += [Text(f"- {item.explanation}") for item in comparison.labels.values()]
    parts += [Text(""), _record_counts_table(comparison), Text("")]
    parts.append(Text(_record_totals(comparison)))
    parts += _moved_records(comparison)
    for side, ids in (("a", comparison.only_in_a), ("b", comparison.only_in_b)):
        if ids:
            shown = ", ".join(ids[:_SHOWN_RECORDS]) + (" …" if len(ids) > _SHOWN_RECORDS else "")
            parts.append(Text(f"Only in {side} ({len(ids)}, left out): {shown}"))
    return Group(*parts)


def _verdicts_table(comparison: Comparison) -> Table:
    """Per evaluation: each side, the paired change with its 95% CI and p, the verdict."""
    table = _compact_table("Evaluations: b - a, paired by record")
    table.add_column("evaluation", overflow="fold")
    for name in ("a", "b", "change", "95% CI", "p"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for label, item in comparison.labels.items():
        # A boolean's change is in points of its share: +5.0 is 70% -> 75%.
        points = item.metric_type == "boolean"
        interval = (
            f"[{_signed(item.ci95[0], points=points)}, {_signed(item.ci95[1], points=points)}]"
            if item.ci95
            else _NOTHING
        )
        verdict = item.verdict or ("categorical" if item.metric_type == "categorical" else "—")
        table.add_row(
            label,
            format_aggregate(item.metric_type, item.a),
            format_aggregate(item.metric_type, item.b),
            _signed(item.difference, points=points) + (" pt" if points else ""),
            interval,
            _p(item.p_value),
            Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
        )
    if not comparison.labels:
        table.add_row(_NOTHING, "", "", "no evaluations on either side")
    return table


def _record_counts_table(comparison: Comparison) -> Table:
    """Per evaluation: how many shared records improved, regressed, stayed; flips; changes."""
    table = _compact_table("Records, per evaluation")
    table.add_column("evaluation", overflow="fold")
    for name in ("improved", "regressed", "unchanged", "pass→fail", "fail→pass"):
        table.add_column(name, justify="right", no_wrap=True)
    categorical = any(item.metric_type == "categorical" for item in comparison.labels.values())
    if categorical:
        table.add_column("label changes", overflow="fold")
    for label, item in comparison.labels.items():
        numeric = item.metric_type in ("score", "boolean")
        boolean = item.metric_type == "boolean"
        moves = ", ".join(f"{move} ×{count}" for move, count in item.label_changes.items())
        table.add_row(
            label,
            str(item.improved) if numeric else "",
            str(item.regressed) if numeric else "",
            str(item.unchanged)
            if item.verdict is not None or item.metric_type == "categorical"
            else "",
            str(item.pass_to_fail) if boolean else "",
            str(item.fail_to_pass) if boolean else "",
            *([moves] if categorical else []),
        )
    return table


def _record_totals(comparison: Comparison) -> str:
    counts: dict[str, int] = {}
    for record in comparison.records:
        counts[record.change] = counts.get(record.change, 0) + 1
    order = ("improved", "regressed", "mixed", "changed", "unchanged")
    totals = ", ".join(f"{counts[change]} {change}" for change in order if counts.get(change))
    return f"Records on both sides: {totals or 'none'}."


def _moved_records(comparison: Comparison) -> list[RenderableType]:
    """The first records that regressed, with each regressed label's value on each side."""
    worst = [record for record in comparison.records if record.change in ("regressed", "mixed")]
    if not worst:
        return []
    table = _compact_table(f"Regressed records ({len(worst)})")
    for name in ("record", "idx", "evaluation", "a", "b"):
        table.add_column(name, justify="right" if name in ("idx", "a", "b") else "left")
    for record in worst[:_SHOWN_RECORDS]:
        for label, entry in record.labels.items():
            if entry["change"] == "regressed":
                table.add_row(
                    record.record_id[:8],
                    str(record.idx),
                    label,
                    _cell(entry["a"]),
                    _cell(entry["b"]),
                )
    if len(worst) > _SHOWN_RECORDS:
        table.add_row("…", "", f"{len(worst) - _SHOWN_RECORDS} more", "", "")
    return [Text(""), table]


def _cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# assay gate -------------------------------------------------------------------------------


def gate_command(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT",
            help="The candidate: an experiment id, unique id prefix or name (newest).",
        ),
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            metavar="SPEC",
            help="What to compare with: an experiment id or name, tag:KEY=VALUE or "
            "branch:NAME (the newest completed experiment so tagged, or on that git branch, "
            "in the candidate's project and dataset). Default: the pinned baseline "
            "(`assay baseline set`).",
        ),
    ] = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            "--max-drop",
            metavar="LABEL=DROP",
            help="A drop this evaluation may take before it counts as a regression (a "
            "boolean's share: 0.02 is 2 points); default 0. Repeat for several.",
        ),
    ] = None,
    minimum: Annotated[
        list[str] | None,
        typer.Option(
            "--min",
            metavar="LABEL=FLOOR",
            help="A floor the candidate's value must not be below beyond doubt, with or "
            "without a baseline. Repeat for several.",
        ),
    ] = None,
    margin: Annotated[
        list[str] | None,
        typer.Option(
            "--margin",
            metavar="LABEL=MARGIN",
            help="A change too small to matter (default: 2% of the label's scale): "
            "'unchanged' needs larger drops ruled out.",
        ),
    ] = None,
    lower_is_better: LowerIsBetter = None,
    fail_on: Annotated[
        FailOn,
        typer.Option(
            "--fail-on",
            help="`regressed`: fail on regressions only (exit 1). `inconclusive`: also "
            "fail (exit 3) when a drop is neither shown nor ruled out.",
        ),
    ] = FailOn.regressed,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Also write the Markdown report here, ready to post as a sticky "
            "pull-request comment (its first line is a marker to find it by).",
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", metavar="FILE", help="Write JUnit XML here: a test per check."),
    ] = None,
    database_url: StoreUrl = None,
) -> None:
    """Gate a candidate experiment for CI: compare it with its baseline and check floors.

    Prints a Markdown report (also appended to `$GITHUB_STEP_SUMMARY` when it is set),
    each verdict explained in one sentence. Exit status: **0** pass, **1** regression,
    **2** error or bad usage, **3** inconclusive (with `--fail-on inconclusive`). With no
    baseline found, `--min` floors alone are checked.
    """
    drops = _assignments(max_drop, "--max-drop", negative=False)
    floors = _assignments(minimum, "--min", negative=True)
    margins = _assignments(margin, "--margin", negative=False)
    failing = ("regressed", "inconclusive") if fail_on is FailOn.inconclusive else ("regressed",)
    try:
        with _store(database_url) as backend:
            result = gate_stored(
                backend,
                experiment,
                baseline=baseline,
                max_drop=drops,
                minimums=floors,
                margin=margins or None,
                lower_is_better=lower_is_better or (),
                fail_on=failing,
            )
        text = markdown_report(result)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as file:
                file.write(text + "\n")
        if report is not None:
            report.write_text(text, encoding="utf-8")
        if junit is not None:
            junit.write_text(junit_xml(result), encoding="utf-8")
    except AssayError as error:
        _fail(str(error), 2)
    except OSError as error:
        _fail(f"cannot write the report: {error}", 2)
    typer.echo(text, nl=False)
    raise typer.Exit(result.exit_code)


# assay baseline ---------------------------------------------------------------------------


def _baseline_help(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(0)


def baseline_set(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT", help="An experiment id, a unique id prefix, or a name (newest)."
        ),
    ],
    database_url: StoreUrl = None,
) -> None:
    """Pin an experiment as the baseline of its project and dataset.

    `assay gate` compares with it when given no `--baseline`. Pinning another experiment
    of the same project and dataset replaces it.
    """
    with _store(database_url) as backend:
        info = backend.resolve_experiment(experiment)
        before = backend.list_baselines(project_id=info.project_id, dataset_id=info.dataset_id)
        pinned = backend.set_baseline(info.id)
    replaced = (
        f", replacing {before[0].experiment_name!r} ({before[0].experiment_id[:8]})"
        if before and before[0].experiment_id != info.id
        else ""
    )
    typer.echo(
        f"Pinned {info.name!r} ({info.id[:8]}) as the baseline of project "
        f"{pinned.project_name!r}, dataset {pinned.dataset_name!r}{replaced}."
    )
    if info.status != "completed":
        typer.echo(
            f"note: its status is {info.status!r}, so some records may be missing from it",
            err=True,
        )


def baseline_show(
    project: Annotated[
        str | None, typer.Option("--project", help="Only the baselines of this project.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only the baselines of this dataset (by name).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (a list of pinned baselines) instead.")
    ] = False,
    database_url: StoreUrl = None,
) -> None:
    """Show the pinned baselines: one per project and dataset."""
    with _store(database_url) as backend:
        pinned = [
            item
            for item in backend.list_baselines()
            if (project is None or item.project_name == project)
            and (dataset is None or item.dataset_name == dataset)
        ]
        location = backend.location
    if as_json:
        _print_json([baseline_json(item) for item in pinned])
        return
    console = _stdout()
    if not pinned:
        where = " ".join(
            part
            for part in (
                f"for project {project!r}" if project else "",
                f"for dataset {dataset!r}" if dataset else "",
            )
            if part
        )
        console.print(
            f"No baseline is pinned{' ' + where if where else ''} in {location}. "
            "Pin one with `assay baseline set EXPERIMENT`.",
            soft_wrap=True,
        )
        return
    console.print(baselines_table(pinned, title=f"Pinned baselines in {location}"))


def baselines_table(pinned: Sequence[PinnedBaseline], *, title: str) -> Table:
    """``assay baseline show``: one line per project and dataset."""
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    for name in ("project", "dataset", "experiment", "id", "pinned"):
        table.add_column(name, overflow="fold", style="cyan" if name == "id" else "")
    for item in pinned:
        table.add_row(
            item.project_name,
            item.dataset_name,
            item.experiment_name,
            item.experiment_id[:8],
            local_time(item.set_at, seconds=False),
        )
    return table


def baseline_json(item: PinnedBaseline) -> dict[str, Any]:
    """A pinned baseline as JSON-ready values (``set_at`` in ISO 8601, UTC)."""
    return {
        "project_id": item.project_id,
        "project_name": item.project_name,
        "dataset_id": item.dataset_id,
        "dataset_name": item.dataset_name,
        "experiment_id": item.experiment_id,
        "experiment_name": item.experiment_name,
        "set_at": item.set_at.isoformat(),
    }
