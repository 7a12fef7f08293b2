"""Which experiment a candidate is compared with: its baseline, named or found.

A baseline is given by a *spec*, one of:

- an experiment id, a unique id prefix (4 characters or more) or a name: that experiment
  (for a name, the newest experiment of that name other than the candidate);
- ``tag:KEY=VALUE``: the newest completed experiment tagged ``KEY=VALUE``;
- ``branch:NAME``: the newest completed experiment that ran on git branch ``NAME`` (its
  ``git.branch`` tag, which every experiment records);
- nothing (``None``): the experiment pinned for the candidate's project and dataset with
  ``assay baseline set EXPERIMENT``.

``tag:`` and ``branch:`` look in the candidate's project and dataset only (records are
matched by id, and another dataset shares none), among completed experiments, and never
return the candidate itself: on ``main``, ``branch:main`` is the run before this one.

A name that would find the candidate (CI runs the same experiment name every time) finds
the newest *other* experiment of that name, and comparing an experiment with itself is an
error, so a gate never passes by comparing the candidate with itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.errors import BaselineError, BaselineNotFoundError
from assay.store.backend import Backend
from assay.store.records import ExperimentFilter, ExperimentInfo, PinnedBaseline

__all__ = ["Baseline", "pin_baseline", "resolve_baseline"]

BRANCH_TAG = "git.branch"
"""The experiment tag that holds the git branch (see :mod:`assay.gitinfo`)."""
SPEC_HELP = "an experiment id or name, tag:KEY=VALUE or branch:NAME"


@dataclass(frozen=True)
class Baseline:
    """The experiment a candidate is compared with, and how it was chosen."""

    experiment: ExperimentInfo
    chosen_by: str
    """How it was found, as a phrase for the report: ``"the newest completed experiment
    on branch 'main'"``, ``"pinned on 2026-05-04 10:12 UTC"``, ``"given as 'ab12cd34'"``."""


def resolve_baseline(backend: Backend, spec: str | None, candidate: ExperimentInfo) -> Baseline:
    """The baseline of ``candidate`` given by ``spec`` (see the module docstring).

    Raises :class:`~assay.errors.BaselineNotFoundError` when nothing matches ``tag:``,
    ``branch:`` or the pinned baseline (the message names the fix),
    :class:`~assay.errors.ExperimentNotFoundError` for an unknown experiment, and
    :class:`~assay.errors.BaselineError` for a malformed spec or the candidate itself.
    """
    if spec is None or not spec.strip():
        return _pinned(backend, candidate)
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "tag" and rest:
        key, equals, value = rest.partition("=")
        if not equals or not key.strip():
            raise BaselineError(
                f"Cannot read the baseline {spec!r}: a tag baseline is tag:KEY=VALUE, "
                "e.g. tag:git.commit.sha=1a2b3c4"
            )
        return _newest(backend, candidate, key.strip(), value.strip(), _tag_phrase(key, value))
    if kind == "branch" and rest:
        return _newest(backend, candidate, BRANCH_TAG, rest.strip(), f"on branch {rest.strip()!r}")
    if kind in ("tag", "branch"):
        raise BaselineError(
            f"Cannot read the baseline {spec!r}: {kind}: needs a value ({SPEC_HELP})"
        )
    return _reference(backend, spec, candidate)


def pin_baseline(backend: Backend, reference: str) -> PinnedBaseline:
    """Pin the experiment ``reference`` (an id, unique id prefix or name) as the baseline of
    its project and dataset, replacing any pinned before."""
    return backend.set_baseline(backend.resolve_experiment(reference).id)


def _where(candidate: ExperimentInfo) -> str:
    return f"project {candidate.project_name!r}, dataset {candidate.dataset_name!r}"


def _tag_phrase(key: str, value: str) -> str:
    return f"tagged {key.strip()}={value.strip()}"


def _newest(
    backend: Backend, candidate: ExperimentInfo, key: str, value: str, phrase: str
) -> Baseline:
    found = backend.list_experiments(
        ExperimentFilter(
            project_id=candidate.project_id,
            dataset_id=candidate.dataset_id,
            status="completed",
            tags={key: value},
            limit=2,  # the candidate may be one of them
        )
    )
    others = [info for info in found if info.id != candidate.id]
    if not others:
        raise BaselineNotFoundError(
            f"No completed experiment {phrase} in {_where(candidate)} other than the "
            f"candidate {candidate.name!r}; run it there first, pin a baseline with "
            "`assay baseline set EXPERIMENT`, or name one with --baseline"
        )
    return Baseline(others[0], f"the newest completed experiment {phrase}")


def _pinned(backend: Backend, candidate: ExperimentInfo) -> Baseline:
    pinned = backend.list_baselines(
        project_id=candidate.project_id, dataset_id=candidate.dataset_id
    )
    if not pinned:
        raise BaselineNotFoundError(
            f"No baseline is pinned for {_where(candidate)}; pin one with "
            f"`assay baseline set EXPERIMENT`, or name one with --baseline ({SPEC_HELP})"
        )
    if pinned[0].experiment_id == candidate.id:
        raise BaselineNotFoundError(
            f"The candidate {candidate.name!r} ({candidate.id[:8]}) is itself the baseline "
            f"pinned for {_where(candidate)}; pin another with `assay baseline set "
            "EXPERIMENT`, or name one with --baseline"
        )
    when = pinned[0].set_at.strftime("%Y-%m-%d %H:%M UTC")
    return Baseline(
        backend.get_experiment(pinned[0].experiment_id),
        f"pinned for {_where(candidate)} on {when}",
    )


def _reference(backend: Backend, spec: str, candidate: ExperimentInfo) -> Baseline:
    found = backend.resolve_experiment(spec)
    if found.id == candidate.id and spec != candidate.id and not candidate.id.startswith(spec):
        # Found by name: CI gives every run the same name, so take the newest other one.
        others = [
            info
            for info in backend.list_experiments(ExperimentFilter(name=spec, limit=2))
            if info.id != candidate.id
        ]
        if not others:
            raise BaselineNotFoundError(
                f"The only experiment named {spec!r} is the candidate itself; run it on "
                "the baseline's code first, or name another with --baseline"
            )
        found = others[0]
    if found.id == candidate.id:
        raise BaselineError(
            f"The baseline {spec!r} is the candidate itself ({candidate.id[:8]}); name "
            f"another experiment ({SPEC_HELP})"
        )
    return Baseline(found, f"given as {spec!r}")
