"""The git repository, branch and commit an experiment ran from, as ddtrace tags them."""

from __future__ import annotations

import functools
import os
import subprocess


def _git(*arguments: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *arguments], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    output = completed.stdout.strip()
    return output if completed.returncode == 0 and output else None


def _branch_name(value: str | None) -> str | None:
    """A branch name as people write it: no ``refs/heads/``, and never a detached ``HEAD``."""
    if not value:
        return None
    value = value.strip().removeprefix("refs/heads/")
    return value if value and value != "HEAD" else None


def _ci_branch() -> str | None:
    """The branch a CI job runs for, when the checkout itself is on none.

    GitHub Actions checks a pull request out as a detached merge commit: its branch is
    ``GITHUB_HEAD_REF``. On a push, ``GITHUB_REF_NAME`` is the branch (or the tag, which
    is no branch: ``GITHUB_REF_TYPE`` says which).
    """
    head = _branch_name(os.environ.get("GITHUB_HEAD_REF"))
    if head:
        return head
    if os.environ.get("GITHUB_REF_TYPE", "branch") == "branch":
        return _branch_name(os.environ.get("GITHUB_REF_NAME"))
    return None


@functools.cache
def git_tags() -> dict[str, str]:
    """``git.repository_url``, ``git.branch``, ``git.commit.sha`` for the current folder.

    ``DD_GIT_REPOSITORY_URL``, ``DD_GIT_BRANCH`` and ``DD_GIT_COMMIT_SHA`` win over what git
    says, as in ddtrace; CI systems set them when the checkout has no ``.git``. A detached
    checkout (a pull request in GitHub Actions) takes its branch from the CI's variables,
    and ``HEAD`` is never recorded as a branch.
    """
    found = {
        "git.repository_url": os.environ.get("DD_GIT_REPOSITORY_URL")
        or _git("config", "--get", "remote.origin.url"),
        "git.branch": _branch_name(os.environ.get("DD_GIT_BRANCH"))
        or _branch_name(_git("rev-parse", "--abbrev-ref", "HEAD"))
        or _ci_branch(),
        "git.commit.sha": os.environ.get("DD_GIT_COMMIT_SHA") or _git("rev-parse", "HEAD"),
    }
    return {key: value for key, value in found.items() if value}
