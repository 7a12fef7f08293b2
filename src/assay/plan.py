"""How many records and runs a comparison needs to catch a drop of a given size.

The gate (:func:`assay.stats.verdict`) calls a change *regressed* with a one-sided paired
*t* test at the 5% level over the records both experiments share, each record's value
being its mean over the runs. Whether it catches a real drop of size ``δ`` depends on how
noisy one record's difference ``b - a`` is, and on how many records there are. A baseline
experiment says how noisy its records are; this module turns that into a plan.

**What a baseline tells.** Per score or boolean label, from each record's usable runs:

- the *between-record variance*: the sample variance (``ddof=1``) of the record means, as
  observed with the baseline's runs. Pairing takes it out of the comparison (an easy
  record stays easy on both sides), which is why a paired test detects far smaller
  changes; it is reported to show how much;
- the *within-record variance* ``σ_w²``: how much one record's value moves from one run to
  the next, pooled over the records with at least two usable runs,
  ``Σ (n_i - 1) s_i² / Σ (n_i - 1)``. For a boolean this is also ``Σ n_i p_i (1 - p_i) /
  Σ (n_i - 1)``, each record's ``p (1 - p)`` with the unbiased ``n / (n - 1)``
  correction, ``p`` being its share of passing runs: the same number.

A *single-run* baseline cannot tell run-to-run from record-to-record variation. For a
boolean the overall pass rate ``p̄`` then gives ``p̄ (1 - p̄) N / (N - 1)``, which counts all
the variation as run-to-run: an upper bound of ``σ_w²``, so the plan errs on the safe
side. A score has no such bound built in: its within-record variance needs a baseline
with two or more runs, or a value the user gives (``within_sd``).

**The model.** With the same ``N`` records on both sides and ``R`` runs on each, the
paired difference of one record has variance ``σ_d² = 2 σ_w² / R + σ_i²``. ``σ_i²`` is the
*interaction* variance: how unevenly the change moves different records (a prompt change
that fixes some records and breaks others has a large one). One baseline cannot estimate
it; it is 0 unless the user gives ``interaction_sd``, which makes the plan optimistic when
a change affects records unevenly: then more records are needed, and more runs help
less, since runs only shrink the first term. For a boolean the two sides' run variances
differ a little: a record passing with rate ``p`` has ``p (1 - p)`` before and
``(p - δ) (1 - p + δ)`` after a drop, so the candidate's term is ``σ_w² - δ (1 - 2p̄) -
δ²`` (with ``+δ`` for a label where lower is better).

**Power.** The test statistic is then noncentral *t* with ``N - 1`` degrees of freedom and
noncentrality ``δ √N / σ_d``, and the power is the chance that it passes the one-sided 5%
critical value: exact, from the noncentral *t* distribution, for any ``N``. The records
needed for ``R`` runs are the smallest ``N`` (at least 2) whose power reaches the target.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

from assay import stats
from assay.aggregation import summarize_records
from assay.errors import ExperimentError
from assay.store.backend import Backend
from assay.store.records import JSON, ExperimentInfo, RowRecord

__all__ = [
    "DEFAULT_POWER",
    "DEFAULT_RUNS",
    "MAX_RECORDS",
    "BaselineNoise",
    "LabelPlan",
    "LabelVariance",
    "Plan",
    "RunsPlan",
    "detection_power",
    "estimate_rows",
    "estimate_stored",
    "label_variance",
    "plan",
    "plan_baseline",
    "plan_label",
    "plan_stored",
    "records_needed",
]

DEFAULT_POWER = 0.8
"""The chance of catching the drop that a plan aims for."""
DEFAULT_RUNS = tuple(range(1, 11))
"""The runs per record a plan looks at, unless told otherwise."""
MAX_RECORDS = 10_000_000
"""Beyond this many records, ``records_needed`` gives up and returns ``None``."""

WithinSource = Literal["runs", "pass_rate", "given", "unknown"]


@dataclass(frozen=True)
class LabelVariance:
    """What a baseline says about the noise of one score or boolean label."""

    label: str
    metric_type: Literal["score", "boolean"]
    records: int
    """Records with at least one usable value."""
    runs: int
    """The baseline's runs per record."""
    mean: float | None
    """The label's summary value: the mean of the record means."""
    between_variance: float | None
    """Sample variance (``ddof=1``) of the record means, with the baseline's runs; ``None``
    with fewer than two records."""
    within_variance: float | None
    """``σ_w²``, the run-to-run variance of one record's value; ``None`` when unknown."""
    within_records: int
    """Records with two or more usable runs, which the pooled ``within_variance`` uses."""
    within_source: WithinSource
    """``runs``: pooled over the records' runs. ``pass_rate``: a single-run boolean,
    ``p̄ (1 - p̄) N / (N - 1)``, an upper bound. ``given``: the user's value. ``unknown``:
    a single-run score (or fewer than two records) and no value given."""
    explanation: str
    """Where ``within_variance`` comes from, in one sentence."""


@dataclass(frozen=True)
class RunsPlan:
    """One line of a plan: a number of runs, and what it takes or gives."""

    runs: int
    records_needed: int | None
    """The fewest records whose power reaches the target; ``None`` when the variance is
    unknown or more than ``MAX_RECORDS`` would be needed."""
    power: float | None
    """The power with the plan's ``records``; ``None`` when no records were given, or the
    variance is unknown."""
    difference_sd: float | None
    """``σ_d``: the standard deviation of one record's paired difference with these runs."""


@dataclass(frozen=True)
class LabelPlan:
    """The plan for one label: its variances, and records needed (or power) per runs."""

    variance: LabelVariance
    higher_is_better: bool
    interaction_variance: float
    """``σ_i²``: 0 (assumed) unless given."""
    candidate_within_variance: float | None
    """The candidate's run variance after the drop: ``σ_w²`` for a score, shifted for a
    boolean (see the module docstring)."""
    plans: list[RunsPlan]


@dataclass(frozen=True)
class BaselineNoise:
    """A stored experiment's variances, per score and boolean label."""

    experiment_id: str
    name: str
    runs: int
    records: int
    """Records with a row in any run."""
    labels: dict[str, LabelVariance]
    other_labels: dict[str, str]
    """Labels that cannot be planned for (categorical, json), to their metric type."""


@dataclass(frozen=True)
class Plan:
    """Everything a plan found; ``to_dict()`` is its JSON form."""

    baseline: BaselineNoise
    drop: float
    power: float
    """The target power."""
    records: int | None
    """The records at which ``RunsPlan.power`` is computed, if given."""
    alpha: float
    labels: dict[str, LabelPlan]

    def to_dict(self) -> dict[str, JSON]:
        labels: dict[str, JSON] = {}
        for label, item in self.labels.items():
            variance = item.variance
            within = variance.within_variance
            labels[label] = {
                "metric_type": variance.metric_type,
                "records": variance.records,
                "runs": variance.runs,
                "mean": variance.mean,
                "between_variance": variance.between_variance,
                "within_variance": within,
                "within_sd": None if within is None else math.sqrt(within),
                "within_records": variance.within_records,
                "within_source": variance.within_source,
                "explanation": variance.explanation,
                "higher_is_better": item.higher_is_better,
                "interaction_variance": item.interaction_variance,
                "candidate_within_variance": item.candidate_within_variance,
                "plans": [asdict(line) for line in item.plans],
            }
        return {
            "experiment": {
                "id": self.baseline.experiment_id,
                "name": self.baseline.name,
                "runs": self.baseline.runs,
                "records": self.baseline.records,
            },
            "drop": self.drop,
            "power": self.power,
            "records": self.records,
            "alpha": self.alpha,
            "labels": labels,
        }


# The statistics ---------------------------------------------------------------------------


def label_variance(
    record_runs: Iterable[Sequence[float | None]],
    *,
    label: str = "",
    metric_type: Literal["score", "boolean"] = "score",
    runs: int | None = None,
) -> LabelVariance:
    """The between- and within-record variances of one label, from each record's runs.

    ``record_runs`` holds one sequence per record of its run values (booleans as 1 and 0),
    ``None`` where a run has no usable value. ``runs`` is the baseline's runs per record
    (default: the longest sequence).

    >>> v = label_variance([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], metric_type="boolean")
    >>> round(v.within_variance, 4), v.within_records, v.within_source
    (0.1667, 2, 'runs')
    """
    given = [list(values) for values in record_runs]
    usable = [[float(v) for v in values if v is not None] for values in given]
    usable = [values for values in usable if values]
    means = [stats.safe_mean(values) for values in usable]
    mean = stats.safe_mean(means) if means else None
    spread = stats.sample_sd(means)
    between = None if spread is None else spread * spread
    repeated = [values for values in usable if len(values) >= 2]
    within: float | None = None
    source: WithinSource = "unknown"
    if repeated:
        squares = stats.safe_sum([_squares(values) for values in repeated])
        within = squares / sum(len(values) - 1 for values in repeated)
        source = "runs"
        explanation = f"pooled over the runs of the {len(repeated)} record(s) with 2+ usable runs"
    elif metric_type == "boolean" and mean is not None and len(means) >= 2:
        # Every record has one usable run: its value is 0 or 1, and p̄(1 - p̄) N/(N - 1) is
        # the variance of all of them, record-to-record variation included.
        within = mean * (1 - mean) * len(means) / (len(means) - 1)
        source = "pass_rate"
        explanation = (
            "one run per record cannot tell run-to-run from record-to-record variation; "
            "p̄(1 - p̄) of the pass rate counts all of it as run-to-run, an upper bound "
            "(the plan errs on the safe side)"
        )
    elif len(means) < 2:
        explanation = "fewer than 2 records with a value: nothing to estimate from"
    else:
        assert between is not None  # two records or more
        explanation = (
            "one run per record cannot estimate how much a score moves between runs: "
            "run the baseline with 2+ runs, or give within_sd / --within-sd (the spread of "
            f"the record values, sd {math.sqrt(between):.3g}, is an upper bound)"
        )
    return LabelVariance(
        label=label,
        metric_type=metric_type,
        records=len(means),
        runs=runs if runs is not None else max((len(values) for values in given), default=0),
        mean=mean,
        between_variance=between,
        within_variance=within,
        within_records=len(repeated),
        within_source=source,
        explanation=explanation,
    )


def detection_power(
    drop: float,
    *,
    records: int,
    runs: int,
    within_variance: float,
    candidate_within_variance: float | None = None,
    interaction_variance: float = 0.0,
    alpha: float = stats.ALPHA,
) -> float:
    """The chance that the gate calls a true drop of ``drop`` regressed.

    With ``records`` records and ``runs`` runs on each side: the one-sided paired *t* test
    at level ``alpha``, exactly (noncentral *t*). ``candidate_within_variance`` is the
    candidate's run variance (default: ``within_variance``). ``drop=0`` gives ``alpha``,
    the false-alarm rate.

    >>> round(detection_power(0.05, records=200, runs=5, within_variance=0.175), 3)
    0.846
    """
    from scipy.special import nctdtr

    _check_runs(runs)
    if records < 2:
        return 0.0  # one record gives no spread: the verdict is always inconclusive
    sd = _difference_sd(runs, within_variance, candidate_within_variance, interaction_variance)
    critical = stats.t_quantile(1 - alpha, records - 1)
    if sd == 0:
        # Every record moves by exactly the drop: the test is certain either way.
        return 1.0 if drop > 0 else 0.0
    noncentrality = drop * math.sqrt(records) / sd
    return float(1.0 - nctdtr(records - 1, noncentrality, critical))


def records_needed(
    drop: float,
    *,
    runs: int,
    within_variance: float,
    candidate_within_variance: float | None = None,
    interaction_variance: float = 0.0,
    power: float = DEFAULT_POWER,
    alpha: float = stats.ALPHA,
) -> int | None:
    """The fewest records (at least 2) whose :func:`detection_power` reaches ``power``.

    ``None`` when more than :data:`MAX_RECORDS` would be needed.

    >>> records_needed(0.05, runs=5, within_variance=0.175)
    175
    """
    _check_drop_and_power(drop, power)

    def enough(records: int) -> bool:
        reached = detection_power(
            drop,
            records=records,
            runs=runs,
            within_variance=within_variance,
            candidate_within_variance=candidate_within_variance,
            interaction_variance=interaction_variance,
            alpha=alpha,
        )
        return reached >= power

    from scipy.special import ndtri

    # The normal approximation is a close first guess; the exact power decides.
    sd = _difference_sd(runs, within_variance, candidate_within_variance, interaction_variance)
    z = float(ndtri(1 - alpha) + ndtri(power))
    high = max(2, math.ceil((z * sd / drop) ** 2))
    while not enough(high):
        if high >= MAX_RECORDS:
            return None
        high = min(2 * high, MAX_RECORDS)
    low = 1  # not enough (fewer than two records never decide)
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return high


def plan_label(
    variance: LabelVariance,
    *,
    drop: float,
    runs: Sequence[int] = DEFAULT_RUNS,
    power: float = DEFAULT_POWER,
    records: int | None = None,
    within_sd: float | None = None,
    interaction_sd: float = 0.0,
    higher_is_better: bool = True,
    alpha: float = stats.ALPHA,
) -> LabelPlan:
    """Records needed, and the power with ``records`` if given, for each of ``runs``.

    ``within_sd`` replaces the baseline's within-record estimate; ``interaction_sd`` is
    ``σ_i`` (see the module docstring).
    """
    _check_drop_and_power(drop, power)
    for value in runs:
        _check_runs(value)
    if records is not None and records < 2:
        raise ValueError(f"records must be at least 2 (a paired test needs two), not {records}")
    for name, sd in (("within_sd", within_sd), ("interaction_sd", interaction_sd)):
        if sd is not None and not (math.isfinite(sd) and sd >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, not {sd}")
    if within_sd is not None:
        variance = replace(
            variance,
            within_variance=within_sd * within_sd,
            within_source="given",
            explanation=f"given: sd {within_sd:g} (within_sd / --within-sd)",
        )
    within = variance.within_variance
    after: float | None = None
    if within is not None:
        after = within
        if variance.metric_type == "boolean" and variance.mean is not None:
            shift = -drop if higher_is_better else drop
            after = max(0.0, within + shift * (1 - 2 * variance.mean) - shift * shift)
    interaction = interaction_sd * interaction_sd
    lines: list[RunsPlan] = []
    for count in runs:
        if within is None:
            lines.append(RunsPlan(count, None, None, None))
            continue
        needed = records_needed(
            drop,
            runs=count,
            within_variance=within,
            candidate_within_variance=after,
            interaction_variance=interaction,
            power=power,
            alpha=alpha,
        )
        reached = None
        if records is not None:
            reached = detection_power(
                drop,
                records=records,
                runs=count,
                within_variance=within,
                candidate_within_variance=after,
                interaction_variance=interaction,
                alpha=alpha,
            )
        sd = _difference_sd(count, within, after, interaction)
        lines.append(RunsPlan(count, needed, reached, sd))
    return LabelPlan(variance, higher_is_better, interaction, after, lines)


# From an experiment -----------------------------------------------------------------------


def estimate_rows(info: ExperimentInfo, rows: Iterable[RowRecord]) -> BaselineNoise:
    """The variances of every score and boolean label of an experiment's rows."""
    iterations = [item.run_iteration for item in info.runs]
    summaries = summarize_records(rows, iterations)
    labels: dict[str, LabelVariance] = {}
    others: dict[str, str] = {}
    names = summaries[0]["evaluations"] if summaries else {}
    for label, first in names.items():
        metric_type = first["metric_type"]
        if metric_type not in ("score", "boolean"):
            others[label] = metric_type
            continue
        record_runs = [
            [_number(value) for value in summary["evaluations"][label]["runs"]]
            for summary in summaries
        ]
        labels[label] = label_variance(
            record_runs,
            label=label,
            metric_type="boolean" if metric_type == "boolean" else "score",
            runs=len(iterations),
        )
    return BaselineNoise(info.id, info.name, len(iterations), len(summaries), labels, others)


def estimate_stored(backend: Backend, reference: str) -> BaselineNoise:
    """:func:`estimate_rows` on a stored experiment: an id, a unique id prefix or a name."""
    info = backend.resolve_experiment(reference)
    return estimate_rows(info, backend.experiment_rows(info.id))


def plan_baseline(
    baseline: BaselineNoise,
    *,
    drop: float,
    labels: Collection[str] | None = None,
    runs: Sequence[int] = DEFAULT_RUNS,
    power: float = DEFAULT_POWER,
    records: int | None = None,
    within_sd: float | Mapping[str, float] | None = None,
    interaction_sd: float | Mapping[str, float] = 0.0,
    lower_is_better: Collection[str] = (),
) -> Plan:
    """The plan of every label of ``baseline`` (or of ``labels``), see :func:`plan_label`.

    ``within_sd`` and ``interaction_sd`` are one value for every label, or a mapping from
    label to value (a label left out keeps the estimate, or 0 for the interaction).
    Raises :class:`~assay.errors.ExperimentError` for a label the baseline cannot plan.
    """
    named = list(labels) if labels is not None else []
    for label in (
        *named,
        *(within_sd if isinstance(within_sd, Mapping) else ()),
        *(interaction_sd if isinstance(interaction_sd, Mapping) else ()),
        *lower_is_better,
    ):
        _check_label(baseline, label)
    chosen = sorted(set(named)) if labels is not None else sorted(baseline.labels)
    plans = {
        label: plan_label(
            baseline.labels[label],
            drop=drop,
            runs=runs,
            power=power,
            records=records,
            within_sd=within_sd.get(label) if isinstance(within_sd, Mapping) else within_sd,
            interaction_sd=(
                interaction_sd.get(label, 0.0)
                if isinstance(interaction_sd, Mapping)
                else interaction_sd
            ),
            higher_is_better=label not in lower_is_better,
        )
        for label in chosen
    }
    return Plan(baseline, drop, power, records, stats.ALPHA, plans)


def plan_stored(
    backend: Backend,
    reference: str,
    *,
    drop: float,
    labels: Collection[str] | None = None,
    runs: Sequence[int] = DEFAULT_RUNS,
    power: float = DEFAULT_POWER,
    records: int | None = None,
    within_sd: float | Mapping[str, float] | None = None,
    interaction_sd: float | Mapping[str, float] = 0.0,
    lower_is_better: Collection[str] = (),
) -> Plan:
    """:func:`plan_baseline` on a stored experiment, given by reference."""
    return plan_baseline(
        estimate_stored(backend, reference),
        drop=drop,
        labels=labels,
        runs=runs,
        power=power,
        records=records,
        within_sd=within_sd,
        interaction_sd=interaction_sd,
        lower_is_better=lower_is_better,
    )


def plan(
    experiment: object,
    *,
    drop: float,
    labels: Collection[str] | None = None,
    runs: Sequence[int] = DEFAULT_RUNS,
    power: float = DEFAULT_POWER,
    records: int | None = None,
    within_sd: float | Mapping[str, float] | None = None,
    interaction_sd: float | Mapping[str, float] = 0.0,
    lower_is_better: Collection[str] = (),
) -> Plan:
    """How many records and runs catch a drop of ``drop``, from a baseline experiment.

    ``experiment`` is an experiment (anything with an ``id``) or a reference: an id, a
    unique id prefix or a name. Needs ``LLMObs.enable()``. See :func:`plan_baseline`.
    """
    from assay.llmobs import LLMObs

    reference = experiment if isinstance(experiment, str) else getattr(experiment, "id", None)
    if not isinstance(reference, str) or not reference:
        raise TypeError(
            f"plan() takes an experiment or its id or name, not {experiment!r} (an "
            "experiment that has not run yet has no id: call run() first)"
        )
    return plan_stored(
        LLMObs._require(),
        reference,
        drop=drop,
        labels=labels,
        runs=runs,
        power=power,
        records=records,
        within_sd=within_sd,
        interaction_sd=interaction_sd,
        lower_is_better=lower_is_better,
    )


# Helpers ----------------------------------------------------------------------------------


def _check_label(baseline: BaselineNoise, label: str) -> None:
    if label in baseline.labels:
        return
    where = f"experiment {baseline.name!r} ({baseline.experiment_id[:8]})"
    plannable = ", ".join(sorted(baseline.labels)) or "none"
    if label in baseline.other_labels:
        raise ExperimentError(
            f"Evaluation {label!r} of {where} is {baseline.other_labels[label]}; plans cover "
            f"score and boolean labels: {plannable}"
        )
    close = difflib.get_close_matches(label, list(baseline.labels), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ExperimentError(
        f"No evaluation {label!r} in {where}{hint}; its score and boolean labels are: {plannable}"
    )


def _check_drop_and_power(drop: float, power: float) -> None:
    if not (math.isfinite(drop) and drop > 0):
        raise ValueError(f"the drop to detect must be a number > 0, not {drop}")
    if not 0 < power < 1:
        raise ValueError(f"the power must be between 0 and 1 (e.g. 0.8), not {power}")


def _check_runs(runs: int) -> None:
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")


def _difference_sd(runs: int, within: float, candidate: float | None, interaction: float) -> float:
    after = within if candidate is None else candidate
    return math.sqrt((within + after) / runs + interaction)


def _number(value: JSON) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _squares(values: Sequence[float]) -> float:
    mean = stats.safe_mean(values)
    return stats.safe_sum([(value - mean) * (value - mean) for value in values])
