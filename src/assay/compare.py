"""Two experiments, or a run of each, compared record by record: what changed, and how sure.

``compare(a, b)`` matches the records of ``a`` (the baseline) and ``b`` (the candidate) by
record id. For every evaluation label it gives each side's value by the seed's rules (over
the selected runs), the mean paired difference ``b - a`` over the records both sides have a
value for, with its 95% interval and p-value, and a verdict: improved, regressed,
unchanged or inconclusive (:func:`assay.stats.verdict` says exactly when). Categorical
labels have no direction, so no verdict: they report which records changed label.

Per record, each label is improved, regressed or unchanged (a boolean's share of passing
runs, a score's mean, in the label's better direction), or changed (a categorical mode);
booleans also count pass→fail and fail→pass flips of the record's mode. Records on one
side only are listed, never dropped silently.

Selecting runs: ``run_a=1, run_b=4`` compares run 1 of ``a`` with run 4 of ``b``; the
default compares every run of each, so a record's value is its mean over its runs, which
is what makes more runs detect smaller changes.

The same function serves the SDK (``assay.compare``), the CLI (``assay compare``) and the
server (``GET .../experiments/compare``). It reads no rows: each side is only its records'
values per label (``Backend.comparison_values``, computed in the database by the SQL
store), so its cost grows with records x labels, not with the inputs, outputs and spans
stored (see ``docs/compare.md``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from assay import stats
from assay.aggregation import AggregateValue
from assay.errors import ExperimentError
from assay.store.backend import Backend
from assay.store.collector import collector_paused
from assay.store.comparison_values import ComparisonValues, LabelValues, values_from_rows
from assay.store.records import JSON, ExperimentInfo, MetricType, RowRecord

__all__ = [
    "Comparison",
    "LabelComparison",
    "RecordChange",
    "Side",
    "compare",
    "compare_rows",
    "compare_stored",
    "compare_values",
    "experiment_reference",
]

Change = Literal["improved", "regressed", "unchanged", "changed", "missing"]
DEFAULT_MARGIN = 0.02
"""A change smaller than this share of a label's scale does not matter (see ``margin``)."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an experiment, and which of its runs are compared."""

    experiment_id: str
    name: str
    run: int | None
    """The one run compared, or ``None`` for every run."""
    runs: list[int]
    """The run iterations compared."""
    records: int
    """How many records have a row in those runs."""

    def describe(self) -> str:
        """``"capitals (1a2b3c4d, 5 run(s))"``: CI gives every run the same name, so the
        short id tells them apart."""
        which = f"run {self.run}" if self.run is not None else f"{len(self.runs)} run(s)"
        return f"{self.name} ({self.experiment_id[:8]}, {which})"


@dataclass(frozen=True)
class LabelComparison:
    """One evaluation label on both sides."""

    label: str
    metric_type: MetricType
    a: AggregateValue
    """Side a's summary value (mean of record means, share of True, or mode of modes)."""
    b: AggregateValue
    difference: float | None
    """The mean over paired records of ``b - a`` (record values); ``None`` if not numeric."""
    records: int
    """How many records both sides have a usable value for (the paired records)."""
    stderr: float | None
    ci95: list[float] | None
    p_value: float | None
    """Two-sided p-value of "no difference" (the paired t test)."""
    verdict: stats.Verdict | None
    """``None`` for categorical and json labels, and for a label on one side only."""
    explanation: str
    """The verdict in one sentence."""
    higher_is_better: bool = True
    max_drop: float = 0.0
    margin: float = 0.0
    improved: int = 0
    """Records whose value moved in the better direction."""
    regressed: int = 0
    unchanged: int = 0
    pass_to_fail: int = 0
    """Booleans: records whose mode went from True to False."""
    fail_to_pass: int = 0
    label_changes: dict[str, int] = field(default_factory=dict)
    """Categorical: ``"old → new"`` to the number of records whose mode changed so."""


@dataclass(frozen=True)
class RecordChange:
    """One record present on both sides: each label's value on each side, and the change."""

    record_id: str
    idx: int
    labels: dict[str, dict[str, JSON]]
    """Label to ``{"a": value, "b": value, "change": ...}``."""

    @property
    def change(self) -> Literal["improved", "regressed", "mixed", "changed", "unchanged"]:
        """The record as a whole: regressed if a label regressed and none improved, etc."""
        seen = {entry["change"] for entry in self.labels.values()}
        if "improved" in seen and "regressed" in seen:
            return "mixed"
        for change in ("regressed", "improved", "changed"):
            if change in seen:
                return change
        return "unchanged"


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found; ``to_dict()`` is its JSON form (CLI and API)."""

    a: Side
    b: Side
    labels: dict[str, LabelComparison]
    records: list[RecordChange]
    only_in_a: list[str]
    """Record ids with rows on side a only."""
    only_in_b: list[str]

    @collector_paused()
    def to_dict(self) -> dict[str, JSON]:
        return {
            "a": asdict(self.a),
            "b": asdict(self.b),
            "labels": {label: asdict(item) for label, item in self.labels.items()},
            "records": [
                {
                    "record_id": record.record_id,
                    "idx": record.idx,
                    "change": record.change,
                    "labels": record.labels,
                }
                for record in self.records
            ],
            "only_in_a": list(self.only_in_a),
            "only_in_b": list(self.only_in_b),
        }


def compare(
    a: object,
    b: object,
    *,
    run_a: int | None = None,
    run_b: int | None = None,
    max_drop: Mapping[str, float] | None = None,
    margin: float | Mapping[str, float] | None = None,
    lower_is_better: Collection[str] = (),
) -> Comparison:
    """Compare experiment ``b`` with the baseline ``a``, or run ``run_b`` with ``run_a``.

    ``a`` and ``b`` are experiments (anything with an ``id``, such as the object
    ``LLMObs.experiment`` returns) or references: an id, a unique id prefix or a name (the
    newest experiment of that name). Needs ``LLMObs.enable()``. See :func:`compare_rows`
    for the options.
    """
    from assay.llmobs import LLMObs

    return compare_stored(
        LLMObs._require(),
        experiment_reference(a, "a"),
        experiment_reference(b, "b"),
        run_a=run_a,
        run_b=run_b,
        max_drop=max_drop,
        margin=margin,
        lower_is_better=lower_is_better,
    )


def compare_stored(
    backend: Backend,
    a: str,
    b: str,
    *,
    run_a: int | None = None,
    run_b: int | None = None,
    max_drop: Mapping[str, float] | None = None,
    margin: float | Mapping[str, float] | None = None,
    lower_is_better: Collection[str] = (),
) -> Comparison:
    """:func:`compare_values` on two stored experiments, given by reference.

    Reads each side's per-record values (``Backend.comparison_values``), never its rows.
    """
    info_a = backend.resolve_experiment(a)
    info_b = backend.resolve_experiment(b)
    # Checked before reading anything, so that a bad run number costs nothing.
    select_runs(info_a, run_a, "a")
    select_runs(info_b, run_b, "b")
    return compare_values(
        (info_a, backend.comparison_values(info_a.id, run=run_a)),
        (info_b, backend.comparison_values(info_b.id, run=run_b)),
        run_a=run_a,
        run_b=run_b,
        max_drop=max_drop,
        margin=margin,
        lower_is_better=lower_is_better,
    )


def experiment_reference(experiment: object, side: str) -> str:
    """The id of an experiment object, or the reference (id or name) given as a string."""
    if isinstance(experiment, str):
        return experiment
    identifier = getattr(experiment, "id", None)
    if isinstance(identifier, str) and identifier:
        return identifier
    raise TypeError(
        f"{side}={experiment!r} is not an experiment, nor its id or name (an experiment "
        "that has not run yet has no id: call run() first)"
    )


def select_runs(info: ExperimentInfo, run: int | None, side: str) -> list[int]:
    """The run iterations of ``info`` to compare: ``[run]``, or all of them."""
    iterations = [item.run_iteration for item in info.runs]
    if run is None:
        return iterations
    if run not in iterations:
        have = f"runs 1..{len(iterations)}" if iterations else "no runs"
        raise ExperimentError(
            f"Experiment {info.name!r} has {have}; there is no run {run} (--run-{side} / "
            f"run_{side})"
        )
    return [run]


def compare_rows(
    a: tuple[ExperimentInfo, Sequence[RowRecord]],
    b: tuple[ExperimentInfo, Sequence[RowRecord]],
    *,
    run_a: int | None = None,
    run_b: int | None = None,
    max_drop: Mapping[str, float] | None = None,
    margin: float | Mapping[str, float] | None = None,
    lower_is_better: Collection[str] = (),
) -> Comparison:
    """:func:`compare_values` on rows already in memory (see the module docstring)."""
    info_a, rows_a = a
    info_b, rows_b = b
    runs_a = select_runs(info_a, run_a, "a")
    runs_b = select_runs(info_b, run_b, "b")
    return compare_values(
        (info_a, values_from_rows(rows_a, runs_a)),
        (info_b, values_from_rows(rows_b, runs_b)),
        run_a=run_a,
        run_b=run_b,
        max_drop=max_drop,
        margin=margin,
        lower_is_better=lower_is_better,
    )


@collector_paused()
def compare_values(
    a: tuple[ExperimentInfo, ComparisonValues],
    b: tuple[ExperimentInfo, ComparisonValues],
    *,
    run_a: int | None = None,
    run_b: int | None = None,
    max_drop: Mapping[str, float] | None = None,
    margin: float | Mapping[str, float] | None = None,
    lower_is_better: Collection[str] = (),
) -> Comparison:
    """Compare two experiments' per-record values (see the module docstring).

    ``a`` and ``b`` are an experiment with its values over ``run_a`` / ``run_b`` (all runs
    when ``None``), as ``Backend.comparison_values`` gives them. ``max_drop`` maps a label
    to the drop it may take before it counts as regressed (default 0: any significant
    drop). ``margin`` is the change too small to matter, for telling unchanged from
    inconclusive: by default 2% of the label's scale (1 for a boolean's share; for a
    score, the range of the record values on both sides). ``lower_is_better`` names
    labels where smaller is better.
    """
    info_a, values_a = a
    info_b, values_b = b
    runs_a = select_runs(info_a, run_a, "a")
    runs_b = select_runs(info_b, run_b, "b")
    position_a = {record_id: n for n, record_id in enumerate(values_a.record_ids)}
    position_b = {record_id: n for n, record_id in enumerate(values_b.record_ids)}
    shared = [record_id for record_id in values_a.record_ids if record_id in position_b]
    labels_a, labels_b = values_a.labels, values_b.labels
    drops = dict(max_drop or {})
    unknown = set(drops) - set(labels_a) - set(labels_b)
    if unknown:
        raise ExperimentError(
            f"No evaluation {sorted(unknown)[0]!r} in either experiment; labels are "
            f"{', '.join(sorted({*labels_a, *labels_b})) or 'none'}"
        )
    changes: dict[str, dict[str, dict[str, JSON]]] = {record_id: {} for record_id in shared}
    labels: dict[str, LabelComparison] = {}
    at_a = [position_a[record_id] for record_id in shared]
    at_b = [position_b[record_id] for record_id in shared]
    for label in sorted({*labels_a, *labels_b}):
        first, second = labels_a.get(label), labels_b.get(label)
        labels[label] = _compare_label(
            label,
            first.summary() if first else None,
            second.summary() if second else None,
            _metric_type(first, second),
            _pairs(shared, (first, at_a), (second, at_b)),
            present=(first is not None, second is not None),
            higher_is_better=label not in lower_is_better,
            max_drop=drops.get(label, 0.0),
            margin=margin.get(label) if isinstance(margin, Mapping) else margin,
            changes=changes,
        )
    idx_b = values_b.idx
    ordered = sorted(zip([idx_b[at] for at in at_b], shared, strict=True))
    return Comparison(
        a=Side(info_a.id, info_a.name, run_a, runs_a, len(values_a.record_ids)),
        b=Side(info_b.id, info_b.name, run_b, runs_b, len(values_b.record_ids)),
        labels=labels,
        records=[RecordChange(record_id, idx, changes[record_id]) for idx, record_id in ordered],
        only_in_a=[record_id for record_id in values_a.record_ids if record_id not in position_b],
        only_in_b=[record_id for record_id in values_b.record_ids if record_id not in position_a],
    )


Pairs = tuple[
    list[str], list[AggregateValue], list[AggregateValue], list[bool | None], list[bool | None]
]
"""The shared records' label on both sides, as columns: ids, values in a and b, modes in
a and b (booleans; ``None`` elsewhere, and on a side without the label)."""


def _pairs(
    shared: list[str],
    a: tuple[LabelValues | None, list[int]],
    b: tuple[LabelValues | None, list[int]],
) -> Pairs:
    (first, at_a), (second, at_b) = a, b
    nothing = [None] * len(shared)

    def pick(items: Sequence[Any] | None, at: list[int]) -> list[Any]:
        return [items[n] for n in at] if items is not None else nothing

    return (
        shared,
        pick(first.values if first else None, at_a),
        pick(second.values if second else None, at_b),
        pick(first.modes if first else None, at_a),
        pick(second.modes if second else None, at_b),
    )


def _metric_type(a: LabelValues | None, b: LabelValues | None) -> MetricType:
    types = {side.metric_type for side in (a, b) if side is not None}
    if len(types) == 1:
        return types.pop()
    # A boolean on one side and a score on the other compare as numbers (True is 1).
    return "score" if types <= {"score", "boolean"} else "categorical"


def _compare_label(
    label: str,
    value_a: AggregateValue,
    value_b: AggregateValue,
    metric_type: MetricType,
    pairs: Pairs,
    *,
    present: tuple[bool, bool],
    higher_is_better: bool,
    max_drop: float,
    margin: float | None,
    changes: dict[str, dict[str, dict[str, JSON]]],
) -> LabelComparison:
    if not all(present):
        side = "a" if present[0] else "b"
        for record_id, old, new, _, _ in zip(*pairs, strict=True):
            changes[record_id][label] = {"a": old, "b": new, "change": "missing"}
        return LabelComparison(
            label,
            metric_type,
            value_a,
            value_b,
            None,
            0,
            None,
            None,
            None,
            None,
            f"{label!r} is only evaluated in experiment {side}: nothing to compare.",
        )
    if metric_type not in ("score", "boolean"):
        return _compare_labels(label, metric_type, value_a, value_b, pairs, changes)
    before: list[float] = []
    after: list[float] = []
    counts: Counter[str] = Counter()
    for record_id, old, new, old_mode, new_mode in zip(*pairs, strict=True):
        change: Change = "missing"
        if isinstance(old, float) and isinstance(new, float):
            before.append(old)
            after.append(new)
            gain = (new - old) if higher_is_better else (old - new)
            change = "improved" if gain > 0 else "regressed" if gain < 0 else "unchanged"
        if metric_type == "boolean" and old_mode is not None and new_mode is not None:
            if old_mode and not new_mode:
                counts["pass_to_fail"] += 1
            elif new_mode and not old_mode:
                counts["fail_to_pass"] += 1
        counts[change] += 1
        changes[record_id][label] = {"a": old, "b": new, "change": change}
    if margin is None:
        scale = 1.0 if metric_type == "boolean" else _range([*before, *after])
        margin = DEFAULT_MARGIN * scale
    difference = stats.paired_difference(before, after)
    decided = stats.verdict(
        difference, higher_is_better=higher_is_better, max_drop=max_drop, margin=margin
    )
    return LabelComparison(
        label=label,
        metric_type=metric_type,
        a=value_a,
        b=value_b,
        difference=difference.mean,
        records=difference.records,
        stderr=difference.stderr,
        ci95=difference.ci95,
        p_value=difference.p_value,
        verdict=decided,
        explanation=_explain(label, decided, difference, higher_is_better, max_drop, margin),
        higher_is_better=higher_is_better,
        max_drop=max_drop,
        margin=margin,
        improved=counts["improved"],
        regressed=counts["regressed"],
        unchanged=counts["unchanged"],
        pass_to_fail=counts["pass_to_fail"],
        fail_to_pass=counts["fail_to_pass"],
    )


def _compare_labels(
    label: str,
    metric_type: MetricType,
    value_a: AggregateValue,
    value_b: AggregateValue,
    pairs: Pairs,
    changes: dict[str, dict[str, dict[str, JSON]]],
) -> LabelComparison:
    """A categorical (or json) label: which records changed their most common value."""
    moves: Counter[str] = Counter()
    same = 0
    for record_id, old, new, _, _ in zip(*pairs, strict=True):
        change: Change = "missing"
        if old is not None and new is not None:
            change = "unchanged" if old == new else "changed"
            if change == "changed":
                moves[f"{old} → {new}"] += 1
            else:
                same += 1
        changes[record_id][label] = {"a": old, "b": new, "change": change}
    changed = sum(moves.values())
    explanation = (
        f"{label!r} is categorical: {changed} of {changed + same} shared record(s) changed "
        "their most common label"
        + (f" (most often {moves.most_common(1)[0][0]})." if moves else ".")
    )
    return LabelComparison(
        label,
        metric_type,
        value_a,
        value_b,
        None,
        changed + same,
        None,
        None,
        None,
        None,
        explanation,
        unchanged=same,
        label_changes=dict(moves.most_common()),
    )


def _range(values: Sequence[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return max(finite) - min(finite) if finite else 0.0


def _number(value: float) -> str:
    return f"{value:+.3g}"


def _explain(
    label: str,
    decided: stats.Verdict,
    difference: stats.PairedDifference,
    higher_is_better: bool,
    max_drop: float,
    margin: float,
) -> str:
    n = difference.records
    if difference.mean is None or difference.stderr is None or difference.ci95 is None:
        return (
            f"{label!r}: inconclusive, {n} shared record(s) with a value on both sides; "
            "a paired comparison needs at least 2."
        )
    low, high = difference.ci95
    measured = (
        f"mean change {_number(difference.mean)} over {n} records "
        f"(95% CI {_number(low)} to {_number(high)}, p = {difference.p_value:.3g})"
    )
    worse = "drop" if higher_is_better else "rise"
    allowed = f" beyond the allowed {max_drop:g}" if max_drop else ""
    # The verdicts are one-sided tests; the p above is two-sided (as scipy's ttest_rel), so
    # a regression can come with p > 0.05 and an interval that reaches 0: say which p decided.
    gain = difference.mean if higher_is_better else -difference.mean
    stderr, df = difference.stderr, n - 1
    if decided == "regressed":
        one_sided = stats.t_cdf((gain + max_drop) / stderr, df) if stderr else 0.0
        shown = (
            f"a {worse} of more than the allowed {max_drop:g} is established"
            if max_drop
            else f"a {worse} this large is unlikely by chance"
        )
        return f"{label!r} regressed: {measured}; {shown} (one-sided p = {one_sided:.2g})."
    if decided == "improved":
        one_sided = stats.t_cdf(-gain / stderr, df) if stderr else 0.0
        return (
            f"{label!r} improved: {measured}; a gain this large is unlikely by chance "
            f"(one-sided p = {one_sided:.2g})."
        )
    tolerance = max(margin, max_drop)
    if decided == "unchanged":
        return (
            f"{label!r} unchanged: {measured}; a {worse} larger than {tolerance:.3g} is ruled out."
        )
    return (
        f"{label!r} inconclusive: {measured}; neither a {worse}{allowed} nor its absence "
        f"(within {tolerance:.3g}) is established — more records or runs would tell."
    )
