"""How much an evaluator disagrees with itself, apart from how much the task varies.

An experiment made by ``rerun_evaluators(..., repeats=K)`` scores every stored output K
times. Each stored output — one (record, parent run) pair — is a *group* of K scores of
the same text, so differences inside a group are the evaluator's own noise. The task's
variation is how much a record's group averages differ across the parent's runs.

For score labels:

- ``judge_sd``: the pooled within-group standard deviation, the square root of the mean of
  the groups' sample variances (groups with at least two usable scores);
- ``task_sd``: the pooled across-run standard deviation of a record's group means, the
  square root of the mean over records of the sample variance of its group means (records
  with at least two parent runs). It still contains a little judge noise (variance
  ``judge_sd² / K``), which is why more repeats separate the two better.

For boolean and categorical labels:

- ``judge_agreement``: the mean over groups of the share of repeats equal to the group's
  mode (1.0: the evaluator always says the same of the same output);
- ``judge_flaky_outputs``: the share of groups whose repeats do not all agree;
- ``task_agreement``: the mean over records of the share of parent runs whose group mode
  equals the record's mode of those modes.

Modes break ties by the alphabetically first ``str()`` of the value, as everywhere in Assay.
Failed and None evaluations are left out.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TypedDict

from assay.store.records import JSON, RowRecord


class JudgeVariance(TypedDict, total=False):
    metric_type: str
    repeats: int
    """K: how many times each output was scored."""
    outputs: int
    """How many stored outputs (record x parent run) had at least one usable score."""
    judge_sd: float | None
    task_sd: float | None
    judge_agreement: float | None
    judge_flaky_outputs: float | None
    task_agreement: float | None


def _mode(values: Sequence[JSON]) -> JSON:
    counts = Counter(values)
    best = max(counts.values())
    return min((value for value in counts if counts[value] == best), key=str)


def _sample_variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((value - mean) ** 2 for value in values) / (len(values) - 1)


def judge_variance(rows: Sequence[RowRecord], *, repeats: int) -> dict[str, JudgeVariance]:
    """Per label, the evaluator's own disagreement and the task's variation (see module)."""
    # label -> record -> parent run -> the K values
    groups: dict[str, dict[str, dict[int, list[JSON]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    types: dict[str, str] = {}
    for row in rows:
        parent_run = (row.run_iteration - 1) // repeats + 1
        for evaluation in row.evaluations:
            value = evaluation.value
            if evaluation.error is not None or value is None:
                continue
            if isinstance(value, float) and math.isnan(value):
                continue
            types.setdefault(evaluation.label, evaluation.metric_type)
            groups[evaluation.label][row.record_id][parent_run].append(value)
    report: dict[str, JudgeVariance] = {}
    for label in sorted(groups):
        metric_type = types[label]
        by_record = groups[label]
        outputs = sum(len(runs) for runs in by_record.values())
        entry: JudgeVariance = {"metric_type": metric_type, "repeats": repeats, "outputs": outputs}
        if metric_type == "score":
            within = [
                _sample_variance([float(v) for v in values])
                for runs in by_record.values()
                for values in runs.values()
                if len(values) >= 2
            ]
            across = [
                _sample_variance([sum(map(float, v)) / len(v) for v in runs.values()])
                for runs in by_record.values()
                if len(runs) >= 2
            ]
            entry["judge_sd"] = math.sqrt(sum(within) / len(within)) if within else None
            entry["task_sd"] = math.sqrt(sum(across) / len(across)) if across else None
        elif metric_type in ("boolean", "categorical"):
            agreements: list[float] = []
            flaky = 0
            task_agreements: list[float] = []
            for runs in by_record.values():
                modes = []
                for values in runs.values():
                    keys = [v if isinstance(v, bool) else str(v) for v in values]
                    mode = _mode(keys)
                    modes.append(mode)
                    agreements.append(sum(1 for key in keys if key == mode) / len(keys))
                    flaky += len(set(keys)) > 1
                if len(modes) >= 2:
                    overall = _mode(modes)
                    task_agreements.append(sum(1 for m in modes if m == overall) / len(modes))
            entry["judge_agreement"] = sum(agreements) / len(agreements) if agreements else None
            entry["judge_flaky_outputs"] = flaky / len(agreements) if agreements else None
            entry["task_agreement"] = (
                sum(task_agreements) / len(task_agreements) if task_agreements else None
            )
        report[label] = entry
    return report
