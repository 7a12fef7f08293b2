"""Baselines: pinned per project and dataset, and found by id, name, tag or git branch.

Resolution runs on SQLite and PostgreSQL; pinning also through an Assay server
(``HttpBackend``). The git branch every experiment records, in a CI checkout too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import inspect

from assay import LLMObs, gitinfo
from assay.baseline import resolve_baseline
from assay.errors import BaselineError, BaselineNotFoundError, ExperimentNotFoundError
from assay.store.backend import Backend
from assay.store.records import ExperimentInfo
from assay.store.sql.backend import SqlBackend
from backends import on_every_backend


def echo(input_data: Any, config: Any) -> Any:
    return input_data


def same(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return bool(output_data == expected_output)


class Runner:
    """Runs small experiments on one dataset of the enabled store, tagged as asked."""

    def __init__(self, llmobs: type[LLMObs], dataset_name: str = "gate") -> None:
        self.llmobs = llmobs
        self.dataset = llmobs.create_dataset(
            dataset_name=dataset_name,
            records=[{"input_data": n, "expected_output": n} for n in range(3)],
        )

    @property
    def backend(self) -> Backend:
        return self.llmobs._require()

    def run(self, name: str, **tags: str) -> ExperimentInfo:
        experiment = self.llmobs.experiment(name, echo, self.dataset, [same], tags=tags)
        experiment.run()
        assert experiment.id is not None
        return self.backend.get_experiment(experiment.id)


@pytest.fixture
def runner(llmobs: type[LLMObs]) -> Runner:
    return Runner(llmobs)


@on_every_backend
def test_one_pinned_baseline_per_project_and_dataset(llmobs: type[LLMObs]) -> None:
    runner = Runner(llmobs)
    backend = runner.backend
    first, second = runner.run("first"), runner.run("second")
    other = Runner(llmobs, "other-dataset").run("other")
    assert backend.list_baselines() == []

    pinned = backend.set_baseline(first.id)
    assert (pinned.experiment_id, pinned.experiment_name) == (first.id, "first")
    assert (pinned.project_name, pinned.dataset_name) == ("test-project", "gate")
    assert (pinned.project_id, pinned.dataset_id) == (first.project_id, first.dataset_id)
    assert isinstance(pinned.set_at, datetime) and pinned.set_at.tzinfo is not None

    replaced = backend.set_baseline(second.id)  # the same project and dataset: replaced
    assert replaced.experiment_id == second.id and replaced.set_at >= pinned.set_at
    backend.set_baseline(other.id)
    assert [(item.dataset_name, item.experiment_name) for item in backend.list_baselines()] == [
        ("gate", "second"),
        ("other-dataset", "other"),
    ]
    [only] = backend.list_baselines(project_id=first.project_id, dataset_id=first.dataset_id)
    assert only == replaced
    assert len(backend.list_baselines(project_id=first.project_id)) == 2
    assert backend.list_baselines(dataset_id=other.dataset_id)[0].experiment_id == other.id
    assert backend.list_baselines(project_id="no-such-project") == []
    with pytest.raises(ExperimentNotFoundError, match="no-such-experiment"):
        backend.set_baseline("no-such-experiment")


@on_every_backend
def test_resolved_by_id_prefix_name_tag_branch_and_pin(runner: Runner) -> None:
    backend = runner.backend
    main_old = runner.run("nightly", **{"git.branch": "main", "model": "small"})
    main_new = runner.run("nightly", **{"git.branch": "main", "model": "large"})
    feature = runner.run("nightly", **{"git.branch": "feature", "model": "large"})

    def resolve(spec: str | None, candidate: ExperimentInfo = feature) -> tuple[str, str]:
        found = resolve_baseline(backend, spec, candidate)
        return found.experiment.id, found.chosen_by

    assert resolve(main_old.id) == (main_old.id, f"given as {main_old.id!r}")
    assert resolve(main_old.id[:8])[0] == main_old.id
    assert resolve("branch:main") == (
        main_new.id,
        "the newest completed experiment on branch 'main'",
    )
    assert resolve("tag:model=small") == (
        main_old.id,
        "the newest completed experiment tagged model=small",
    )
    # Never the candidate itself: on main, branch:main is the run before this one.
    assert resolve("branch:main", main_new)[0] == main_old.id
    assert resolve("tag:model=large")[0] == main_new.id
    # A name finds the newest experiment of that name other than the candidate.
    assert resolve("nightly")[0] == main_new.id
    assert resolve("nightly", main_old)[0] == feature.id

    backend.set_baseline(main_old.id)
    found_id, chosen_by = resolve(None)
    assert found_id == main_old.id
    assert chosen_by.startswith("pinned for project 'test-project', dataset 'gate' on ")


def test_only_completed_experiments_of_the_same_dataset_are_found(
    llmobs: type[LLMObs],
) -> None:
    runner = Runner(llmobs)
    done = runner.run("done", **{"git.branch": "main"})
    failed = runner.run("failed", **{"git.branch": "main"})
    runner.backend.set_experiment_status(failed.id, "failed", "boom")
    elsewhere = Runner(llmobs, "elsewhere").run("elsewhere", **{"git.branch": "main"})
    candidate = runner.run("candidate", **{"git.branch": "feature"})
    found = resolve_baseline(runner.backend, "branch:main", candidate)
    assert found.experiment.id == done.id
    assert found.experiment.id not in (failed.id, elsewhere.id)


def test_what_cannot_be_found_says_how_to_fix_it(runner: Runner) -> None:
    backend = runner.backend
    candidate = runner.run("candidate", **{"git.branch": "feature"})
    with pytest.raises(BaselineNotFoundError) as pinned:
        resolve_baseline(backend, None, candidate)
    assert "No baseline is pinned for project 'test-project', dataset 'gate'" in str(pinned.value)
    assert "`assay baseline set EXPERIMENT`" in str(pinned.value)
    assert "--baseline" in str(pinned.value)
    with pytest.raises(BaselineNotFoundError, match="No completed experiment on branch 'main'"):
        resolve_baseline(backend, "branch:main", candidate)
    with pytest.raises(BaselineNotFoundError, match="tagged model=x"):
        resolve_baseline(backend, "tag:model=x", candidate)
    with pytest.raises(BaselineNotFoundError, match="only experiment named 'candidate'"):
        resolve_baseline(backend, "candidate", candidate)
    with pytest.raises(ExperimentNotFoundError, match="no-such-thing"):
        resolve_baseline(backend, "no-such-thing", candidate)
    for spec in ("tag:model", "tag:=x", "branch:", "tag:"):
        with pytest.raises(BaselineError, match="Cannot read the baseline"):
            resolve_baseline(backend, spec, candidate)
    with pytest.raises(BaselineError, match="is the candidate itself"):
        resolve_baseline(backend, candidate.id, candidate)
    backend.set_baseline(candidate.id)
    with pytest.raises(BaselineNotFoundError, match="is itself the baseline pinned"):
        resolve_baseline(backend, None, candidate)


@pytest.mark.empty_database
def test_a_store_of_the_previous_schema_gains_the_baselines_table(store_url: str) -> None:
    from alembic import command

    from assay.store.sql.engine import _alembic_config, open_engine

    engine = open_engine(store_url)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        assert not inspect(connection).has_table("baselines")
    engine.dispose()
    backend = SqlBackend(store_url)  # migrates to the newest schema
    try:
        assert backend.list_baselines() == []
        with backend.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0007")
            assert not inspect(connection).has_table("baselines")
    finally:
        backend.close()


# The git branch an experiment records ------------------------------------------------------


@pytest.fixture
def ci_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No git or CI variables from the machine running the tests; git_tags recomputed."""
    for variable in (
        "DD_GIT_BRANCH",
        "DD_GIT_REPOSITORY_URL",
        "DD_GIT_COMMIT_SHA",
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
        "GITHUB_REF_TYPE",
    ):
        monkeypatch.delenv(variable, raising=False)
    gitinfo.git_tags.cache_clear()
    yield monkeypatch
    gitinfo.git_tags.cache_clear()


def _git_says(monkeypatch: pytest.MonkeyPatch, branch: str | None) -> None:
    answers = {
        ("config", "--get", "remote.origin.url"): "https://github.com/acme/bot.git",
        ("rev-parse", "--abbrev-ref", "HEAD"): branch,
        ("rev-parse", "HEAD"): "0123abcd",
    }
    monkeypatch.setattr(gitinfo, "_git", lambda *arguments: answers[arguments])


def test_a_detached_checkout_takes_its_branch_from_github_actions(
    ci_environment: pytest.MonkeyPatch,
) -> None:
    monkeypatch = ci_environment
    _git_says(monkeypatch, "HEAD")  # a pull request: actions/checkout detaches HEAD
    assert "git.branch" not in gitinfo.git_tags()  # never "HEAD"
    assert gitinfo.git_tags()["git.commit.sha"] == "0123abcd"

    monkeypatch.setenv("GITHUB_REF_NAME", "42/merge")
    monkeypatch.setenv("GITHUB_HEAD_REF", "fix-prompt")
    gitinfo.git_tags.cache_clear()
    assert gitinfo.git_tags()["git.branch"] == "fix-prompt"

    monkeypatch.setenv("GITHUB_HEAD_REF", "")  # a push: the ref name is the branch
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    gitinfo.git_tags.cache_clear()
    assert gitinfo.git_tags()["git.branch"] == "main"

    monkeypatch.setenv("GITHUB_REF_TYPE", "tag")  # a pushed tag is no branch
    monkeypatch.setenv("GITHUB_REF_NAME", "v1.2")
    gitinfo.git_tags.cache_clear()
    assert "git.branch" not in gitinfo.git_tags()


def test_git_and_dd_git_branch_win_over_the_ci_variables(
    ci_environment: pytest.MonkeyPatch,
) -> None:
    monkeypatch = ci_environment
    monkeypatch.setenv("GITHUB_HEAD_REF", "from-github")
    _git_says(monkeypatch, "local-branch")
    assert gitinfo.git_tags() == {
        "git.repository_url": "https://github.com/acme/bot.git",
        "git.branch": "local-branch",
        "git.commit.sha": "0123abcd",
    }
    monkeypatch.setenv("DD_GIT_BRANCH", "refs/heads/release")
    gitinfo.git_tags.cache_clear()
    assert gitinfo.git_tags()["git.branch"] == "release"
    _git_says(monkeypatch, None)  # no git at all
    monkeypatch.delenv("DD_GIT_BRANCH")
    gitinfo.git_tags.cache_clear()
    assert gitinfo.git_tags()["git.branch"] == "from-github"
