"""How sure a number is, and how stable each record is from one run to the next.

An average over the records of a multi-run experiment is an estimate: another set of
records drawn the same way, or the same records run again, would give a slightly different
number. This module says how different, and how much each record moves between its runs.
Everything here is a pure function over plain numbers; :mod:`assay.aggregation` applies
them to an experiment's evaluations.

**Standard error and 95% interval, clustered by record.** The summary of a score is the
mean of the record means, and that of a boolean the mean of the records' shares of
``True``. Its standard error is the sample standard deviation of those per-record values
(``ddof=1``) divided by the square root of the number of records, and the 95% interval is
the mean plus or minus Student's *t* quantile with ``records - 1`` degrees of freedom times
that standard error. With a single record there is nothing to measure the spread with, and
both are ``None``.

*Why clustered.* Five runs of one record are not five independent observations: they share
the record's question, its difficulty and its expected answer, so they tend to agree with
each other far more than with the runs of another record. Treating the ``records x runs``
values as independent divides by the square root of the number of *values*, which makes
the interval too narrow, and the more runs, the more overconfident it gets. It says nothing
about the question we ask, "how good is the task on records like these?", which is answered
at the level of records. Averaging each record's runs first and then treating the records
as the independent units gives an interval that is honest whatever the runs have in common,
with the same or a different number of usable runs per record (a record with fewer usable
runs simply has a noisier mean, which the spread of the record means already contains).

The interval is the one of the mean of a sample of records; it does not widen for the
variability of the runs beyond what that variability adds to the record means. Student's
*t* rather than the normal quantile keeps the interval honest with few records (with 5
records *t* is 2.78 where the normal quantile is 1.96); with many the two agree. For
booleans the interval is cut to ``[0, 1]``. When every record has the same value the
interval has zero width: the records agree, which is not the same as certainty.

**Spread between runs** (``run_sd``). Each run alone gives its own summary (the mean over
the records of that run's values). ``run_sd`` is the sample standard deviation of those
per-run summaries: how much the headline number would move if the experiment had been run
once instead of ``N`` times. ``None`` with fewer than two runs.

**pass@k and pass^k** (boolean labels). For a record with ``n`` usable runs of which ``c``
are ``True``:

- ``pass@k`` is the chance that at least one of ``k`` runs drawn from its ``n`` (without
  replacement) passes, estimated without bias as ``1 - C(n - c, k) / C(n, k)`` (Chen et al.
  2021, *Evaluating Large Language Models Trained on Code*);
- ``pass^k`` ("pass hat k") is the chance that all ``k`` drawn runs pass,
  ``C(c, k) / C(n, k)`` (Yao et al. 2024, *τ-bench*): a measure of reliability rather
  than of potential.

Both are averaged over the records, for ``k = 1..N`` where ``N`` is the number of runs. A
record with fewer than ``k`` usable runs has no estimate for that ``k`` and is left out of
its average; a ``k`` that no record reaches is ``None``. ``pass@1`` and ``pass^1`` both
equal the mean of the records' shares, the boolean's summary value.

**Per-record stability.** Across the usable runs of one record: for scores ``sd`` (sample
standard deviation, ``ddof=1``; ``None`` with one run), ``min`` and ``max``; for
categorical labels ``agreement``, the share of runs equal to the most frequent value (1.0
when every run agrees, 1/3 when three runs say three different things); for booleans
``flaky``, true when the runs disagree (some pass and some fail).

**Paired comparison** (``paired_difference``, ``verdict``). Two experiments (or two runs)
over the same records are compared record by record: each record's value on each side is
its mean over the selected runs (a boolean's share of ``True``), and the differences
``b - a`` of the records both sides share are the independent units, as above. Pairing
takes out what the records themselves contribute (easy and hard questions stay easy and
hard on both sides), which is most of the variation, so a paired test detects far smaller
changes than comparing two unpaired means; and since a record's value averages its runs,
more runs make each difference less noisy and the test sharper. The mean difference gets
its standard error, Student's *t* 95% interval with ``records - 1`` degrees of freedom and
a two-sided p-value: exactly ``scipy.stats.ttest_rel`` on the record values.

The verdict asks the question a regression gate asks, in one direction at a time, each a
one-sided *t* test at the 5% level (so that, with no true change, a gate that fails on
``regressed`` fails 5% of the time; a two-sided test would fail 2.5% of the time while
missing more real drops). With ``gain`` the difference in the direction that is better
(``-difference`` when lower is better), ``max_drop`` the drop that is tolerated and
``margin`` the change too small to matter:

- **regressed**: the gain is below ``-max_drop`` (one-sided p < 0.05);
- **improved**: the gain is above 0 (one-sided p < 0.05);
- **unchanged**: neither, and the one-sided 95% lower bound of the gain is at least
  ``-max(margin, max_drop)``: a drop that matters is ruled out;
- **inconclusive**: neither, and such a drop is not ruled out (too few records, or records
  too noisy, to tell); also with fewer than two shared records.

Infinite and ``NaN`` inputs propagate as IEEE arithmetic makes them (``inf`` and ``nan``),
as they would in numpy; nothing here raises on them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache
from typing import Literal, NamedTuple

__all__ = [
    "MeanEstimate",
    "PairedDifference",
    "Verdict",
    "agreement",
    "clustered_mean",
    "flaky",
    "paired_difference",
    "pass_at_k",
    "pass_curves",
    "pass_hat_k",
    "run_sd",
    "safe_mean",
    "safe_sum",
    "sample_sd",
    "t_cdf",
    "t_quantile",
    "verdict",
]

Verdict = Literal["improved", "regressed", "unchanged", "inconclusive"]
ALPHA = 0.05
"""The level of each one-sided test behind a verdict."""


class MeanEstimate(NamedTuple):
    """A mean of independent units with its standard error and 95% interval."""

    mean: float | None
    """The mean of the units; ``None`` when there are none."""

    stderr: float | None
    """``sd(units, ddof=1) / sqrt(n)``; ``None`` with fewer than two units."""

    ci95: list[float] | None
    """``[low, high]``: the mean plus or minus ``t(0.975, n - 1)`` standard errors (cut to
    the given bounds); ``None`` with fewer than two units."""


def clustered_mean(
    unit_means: Sequence[float], *, bounds: tuple[float, float] | None = None
) -> MeanEstimate:
    """The mean of per-record values, its standard error and 95% interval.

    ``unit_means`` holds one value per record (a record's mean score, or its share of
    ``True``): the records are the independent units, their runs are not. ``bounds`` cuts
    the interval to the values the mean can take, e.g. ``(0.0, 1.0)`` for shares.

    >>> estimate = clustered_mean([0.5, 1.0, 0.0])
    >>> estimate.mean, round(estimate.stderr, 4), [round(x, 3) for x in estimate.ci95]
    (0.5, 0.2887, [-0.742, 1.742])
    """
    n = len(unit_means)
    if n == 0:
        return MeanEstimate(None, None, None)
    mean = safe_mean(unit_means)
    sd = sample_sd(unit_means)
    if sd is None:
        return MeanEstimate(mean, None, None)
    stderr = sd / math.sqrt(n)
    half_width = t_quantile(0.975, n - 1) * stderr
    low, high = mean - half_width, mean + half_width
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanEstimate(mean, stderr, [low, high])


@lru_cache(maxsize=256)
def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom."""
    # scipy.special alone imports in a fraction of the time scipy.stats takes; and only
    # here, so that `import assay` does not pay for it.
    from scipy.special import stdtrit

    return float(stdtrit(df, probability))


def t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtr

    return float(stdtr(df, t))


class PairedDifference(NamedTuple):
    """The mean of paired differences ``b - a`` over records, with its uncertainty."""

    records: int
    """How many records both sides have a usable value for."""

    mean: float | None
    """The mean difference ``b - a``; ``None`` with no shared record."""

    stderr: float | None
    """``sd(differences, ddof=1) / sqrt(records)``; ``None`` with fewer than two."""

    ci95: list[float] | None
    """``[low, high]``: the mean plus or minus ``t(0.975, records - 1)`` standard errors."""

    p_value: float | None
    """Two-sided p-value of "no difference" (``scipy.stats.ttest_rel``)."""


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Compare ``b`` with ``a``, position by position (one position per record).

    >>> d = paired_difference([0.5, 0.7, 0.9], [0.6, 0.9, 1.0])
    >>> round(d.mean, 4), round(d.stderr, 4), round(d.p_value, 4)
    (0.1333, 0.0333, 0.0572)
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need one per record on each side ({len(a)} != {len(b)})")
    differences = [y - x for x, y in zip(a, b, strict=True)]
    n = len(differences)
    if n == 0:
        return PairedDifference(0, None, None, None, None)
    mean = safe_mean(differences)
    sd = sample_sd(differences)
    if sd is None:
        return PairedDifference(n, mean, None, None, None)
    stderr = sd / math.sqrt(n)
    half_width = t_quantile(0.975, n - 1) * stderr
    # With no spread every record moved by exactly the same amount: certain either way.
    exact = 1.0 if mean == 0 else 0.0
    p_value = exact if stderr == 0 else 2 * t_cdf(-abs(mean) / stderr, n - 1)
    return PairedDifference(n, mean, stderr, [mean - half_width, mean + half_width], p_value)


def verdict(
    difference: PairedDifference,
    *,
    higher_is_better: bool = True,
    max_drop: float = 0.0,
    margin: float = 0.0,
) -> Verdict:
    """improved, regressed, unchanged or inconclusive: the rules of the module docstring."""
    if max_drop < 0 or margin < 0:
        raise ValueError(f"max_drop and margin must not be negative ({max_drop}, {margin})")
    if difference.mean is None or difference.stderr is None:
        return "inconclusive"
    gain = difference.mean if higher_is_better else -difference.mean
    df = difference.records - 1
    stderr = difference.stderr
    if stderr == 0:
        if gain < -max_drop:
            return "regressed"
        if gain > 0:
            return "improved"
        return "unchanged" if gain >= -max(margin, max_drop) else "inconclusive"
    if t_cdf((gain + max_drop) / stderr, df) < ALPHA:
        return "regressed"
    if t_cdf(-gain / stderr, df) < ALPHA:
        return "improved"
    lower = gain - t_quantile(1 - ALPHA, df) * stderr
    return "unchanged" if lower >= -max(margin, max_drop) else "inconclusive"


def sample_sd(values: Sequence[float]) -> float | None:
    """The sample standard deviation (``ddof=1``); ``None`` with fewer than two values.

    Exactly ``0.0`` when all values are equal, whatever rounding the mean suffers.
    """
    n = len(values)
    if n < 2:
        return None
    if all(value == values[0] for value in values):
        return 0.0 if math.isfinite(values[0]) else math.nan
    mean = safe_mean(values)
    # Two passes: the sum of squared deviations does not cancel the way E[x²] - E[x]² does.
    squares = safe_sum([(value - mean) * (value - mean) for value in values])
    return math.sqrt(squares / (n - 1))


def run_sd(per_run: Iterable[float | None]) -> float | None:
    """The sample standard deviation of the per-run summaries that exist.

    Runs with no usable value (``None``) are left out; ``None`` when fewer than two remain.
    """
    return sample_sd([value for value in per_run if value is not None])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased chance that at least one of ``k`` of ``n`` runs, ``c`` passing, passes.

    ``1 - C(n - c, k) / C(n, k)``, exact: the ratio of two integers is correctly rounded.

    >>> pass_at_k(5, 1, 2)
    0.4
    """
    _check_counts(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased chance that all of ``k`` of ``n`` runs, ``c`` passing, pass: ``C(c, k) / C(n, k)``.

    >>> pass_hat_k(5, 4, 2)
    0.6
    """
    _check_counts(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def pass_curves(
    counts: Iterable[tuple[int, int]], runs: int
) -> tuple[dict[int, float | None], dict[int, float | None]]:
    """``pass@k`` and ``pass^k`` averaged over records, for ``k = 1..runs``.

    ``counts`` holds one ``(usable runs, passing runs)`` pair per record. Records with fewer
    usable runs than ``k`` do not count for that ``k``; a ``k`` no record reaches is
    ``None``. Each distinct pair is computed once, so the cost does not grow with records.
    """
    tally = Counter(counts)
    at_k: dict[int, float | None] = {}
    hat_k: dict[int, float | None] = {}
    for k in range(1, runs + 1):
        eligible = [(n, c, times) for (n, c), times in tally.items() if n >= k]
        records = sum(times for _, _, times in eligible)
        if not records:
            at_k[k] = hat_k[k] = None
            continue
        at_k[k] = math.fsum(times * pass_at_k(n, c, k) for n, c, times in eligible) / records
        hat_k[k] = math.fsum(times * pass_hat_k(n, c, k) for n, c, times in eligible) / records
    return at_k, hat_k


def agreement(values: Sequence[Hashable]) -> float | None:
    """The share of ``values`` equal to the most frequent one; ``None`` when empty.

    >>> agreement(["pos", "neg", "pos"])
    0.6666666666666666
    """
    if not values:
        return None
    return max(Counter(values).values()) / len(values)


def flaky(values: Sequence[bool]) -> bool | None:
    """Whether the runs disagree (some ``True`` and some ``False``); ``None`` when empty."""
    if not values:
        return None
    return any(values) and not all(values)


def _check_counts(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")


def safe_sum(values: Sequence[float]) -> float:
    """``math.fsum``, or plain addition where fsum refuses (infinities, overflow)."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        # fsum refuses inf - inf and intermediate overflow; plain addition gives inf or nan.
        return float(sum(values))


def safe_mean(values: Sequence[float]) -> float:
    """The mean by :func:`safe_sum`."""
    return safe_sum(values) / len(values)
