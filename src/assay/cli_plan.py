"""``assay plan``: how many records and runs a comparison needs, from a baseline experiment.

The command is registered on the ``assay`` app by :mod:`assay.cli`, which translates its
errors: a bad option is a usage error (exit 2), an unknown experiment an Assay error
(exit 1). Everything it computes comes from :mod:`assay.plan`.
"""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from assay.errors import ExperimentError
from assay.plan import (
    DEFAULT_POWER,
    DEFAULT_RUNS,
    MAX_RECORDS,
    LabelPlan,
    Plan,
    estimate_stored,
    plan_baseline,
)
from assay.store import open_backend

__all__ = ["plan"]


def plan(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT",
            help="The baseline: an experiment id, a unique id prefix, or a name (newest).",
        ),
    ],
    drop: Annotated[
        float,
        typer.Option(
            "--drop",
            metavar="DELTA",
            help="The drop to detect, in the label's units (0.05: five points of a pass rate).",
        ),
    ],
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            metavar="LABEL",
            help="Plan for this label (repeat for several). Default: every score and "
            "boolean label.",
        ),
    ] = None,
    power: Annotated[
        float,
        typer.Option(help="The chance of catching the drop to aim for, between 0 and 1."),
    ] = DEFAULT_POWER,
    runs: Annotated[
        str,
        typer.Option(
            "--runs",
            metavar="R,R,...",
            help="The runs per record to plan for, comma-separated.",
        ),
    ] = ",".join(map(str, DEFAULT_RUNS)),
    records: Annotated[
        int | None,
        typer.Option(
            "--records", metavar="N", help="Also show the power with N records, per number of runs."
        ),
    ] = None,
    within_sd: Annotated[
        list[str] | None,
        typer.Option(
            "--within-sd",
            metavar="[LABEL=]SD",
            help="How much a record's value moves between runs (a standard deviation), "
            "instead of the baseline's estimate: needed for a score of a single-run "
            "baseline. SD alone applies to every label.",
        ),
    ] = None,
    interaction_sd: Annotated[
        list[str] | None,
        typer.Option(
            "--interaction-sd",
            metavar="[LABEL=]SD",
            help="How unevenly the change moves different records (a standard deviation; "
            "default 0, which is optimistic when a change helps some records and hurts "
            "others).",
        ),
    ] = None,
    lower_is_better: Annotated[
        list[str] | None,
        typer.Option("--lower-is-better", metavar="LABEL", help="A label where smaller is better."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the variances and plan per label).")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="The store: a SQLAlchemy URL, or an Assay server's http(s) URL (default: "
            "ASSAY_URL, else ASSAY_DATABASE_URL, else $ASSAY_HOME/assay.db).",
        ),
    ] = None,
) -> None:
    """How many records and runs catch a drop of `--drop`, from a baseline's variance.

    For each score and boolean label, estimates from the baseline how much the records
    differ and how much one record moves between runs, then gives, for each number of
    runs, the fewest records with which `assay gate` (a one-sided paired t test at the 5%
    level) catches the drop with the target `--power`. Assumes the change moves every
    record alike unless `--interaction-sd` says otherwise.
    """
    if not drop > 0:
        _usage_error(f"the drop to detect must be > 0, not {drop:g}", "'--drop'")
    if not 0 < power < 1:
        _usage_error(f"the power must be between 0 and 1 (e.g. 0.8), not {power:g}", "'--power'")
    if records is not None and records < 2:
        _usage_error(f"a paired test needs at least 2 records, not {records}", "'--records'")
    counts = _runs_list(runs)
    within = _label_values(within_sd, "'--within-sd'")
    interaction = _label_values(interaction_sd, "'--interaction-sd'")
    backend = open_backend(database_url)
    try:
        baseline = estimate_stored(backend, experiment)
    finally:
        backend.close()
    if not baseline.labels:
        others = ", ".join(sorted(baseline.other_labels))
        raise ExperimentError(
            f"Experiment {baseline.name!r} ({baseline.experiment_id[:8]}) has no score or "
            "boolean evaluation to plan from" + (f" (only {others})" if others else "")
        )
    try:
        result = plan_baseline(
            baseline,
            drop=drop,
            labels=labels or None,
            runs=counts,
            power=power,
            records=records,
            within_sd=within,
            interaction_sd=interaction if interaction is not None else 0.0,
            lower_is_better=lower_is_better or (),
        )
    except ExperimentError as error:  # a label the baseline cannot plan for
        options = {
            "'--label'": labels or [],
            "'--within-sd'": within if isinstance(within, dict) else {},
            "'--interaction-sd'": interaction if isinstance(interaction, dict) else {},
            "'--lower-is-better'": lower_is_better or [],
        }
        _usage_error(
            str(error),
            next(
                (name for name, given in options.items() if set(given) - set(baseline.labels)),
                None,
            ),
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_plan(result)


def _usage_error(message: str, param: str | None) -> NoReturn:
    raise typer.BadParameter(message, param_hint=param)


def _runs_list(text: str) -> list[int]:
    counts: list[int] = []
    for part in text.split(","):
        try:
            count = int(part.strip())
        except ValueError:
            count = 0
        if count < 1:
            _usage_error(
                f"{text!r} is not a comma-separated list of runs, each 1 or more (e.g. 1,3,5,10)",
                "'--runs'",
            )
        if count not in counts:
            counts.append(count)
    return counts


def _label_values(values: list[str] | None, param: str) -> float | dict[str, float] | None:
    """``["0.1"]`` is one value for every label; ``["a=0.1", "b=0.2"]`` one per label."""
    if not values:
        return None
    shared: float | None = None
    per_label: dict[str, float] = {}
    for text in values:
        label, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf") or (label == "" and "=" in text):
            _usage_error(f"{text!r} is not SD or LABEL=SD with SD a number >= 0", param)
        if label:
            per_label[label] = value
        else:
            shared = value
    if shared is None:
        return per_label
    if per_label:
        _usage_error("give either one SD for every label or LABEL=SD values, not both", param)
    return shared


def _print_plan(result: Plan) -> None:
    # No markup or emoji: labels and names are the user's text.
    console = Console(soft_wrap=False, highlight=False, markup=False, emoji=False)
    baseline = result.baseline
    console.print(
        f"Baseline {baseline.name!r} ({baseline.experiment_id[:8]}): {baseline.records} "
        f"records x {baseline.runs} run(s). To catch a drop of {result.drop:g} with "
        f"{result.power:.0%} power, with `assay gate`'s test (one-sided paired t, "
        f"{result.alpha:.0%} level):",
        soft_wrap=True,
    )
    for label, item in result.labels.items():
        variance = item.variance
        console.print()
        console.print(_variance_text(label, item), soft_wrap=True)
        if variance.within_variance is None:
            continue
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("runs", justify="right")
        table.add_column("records needed", justify="right")
        if result.records is not None:
            table.add_column(f"power with {result.records} records", justify="right")
        table.add_column("sd of a record's change", justify="right")
        for line in item.plans:
            needed = (
                f"> {MAX_RECORDS:,}" if line.records_needed is None else f"{line.records_needed:,}"
            )
            cells = [str(line.runs), needed]
            if result.records is not None:
                cells.append(_percent(line.power))
            cells.append("—" if line.difference_sd is None else f"{line.difference_sd:.3g}")
            table.add_row(*cells)
        console.print(table)


def _variance_text(label: str, item: LabelPlan) -> str:
    variance = item.variance
    mean = "—" if variance.mean is None else f"{variance.mean:.4g}"
    lines = [f"{label} ({variance.metric_type}): mean {mean} over {variance.records} records"]
    between = variance.between_variance
    if between is not None:
        lines.append(f"  between records: variance {_variance(between)} of the record means")
    within = variance.within_variance
    shown = "unknown" if within is None else f"variance {_variance(within)}"
    lines.append(f"  within a record: {shown}, {variance.explanation}")
    if within is None:
        lines.append("  no plan without it")
        return "\n".join(lines)
    if item.interaction_variance:
        lines.append(f"  interaction:     variance {_variance(item.interaction_variance)}, given")
    else:
        lines.append(
            "  interaction:     0, assumed (the change moves every record alike; give "
            "--interaction-sd if it may not)"
        )
    return "\n".join(lines)


def _percent(power: float | None) -> str:
    if power is None:
        return "—"
    # Rounding would print 100.0%, a certainty no test has.
    return "> 99.9%" if power > 0.999 else f"{power:.1%}"


def _variance(value: float) -> str:
    return f"{value:.4g} (sd {value**0.5:.3g})"
