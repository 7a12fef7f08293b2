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


@functools.cache
def git_tags() -> dict[str, str]:
    """``git.repository_url``, ``git.branch``, ``git.commit.sha`` for the current folder.

    ``DD_GIT_REPOSITORY_URL``, ``DD_GIT_BRANCH`` and ``DD_GIT_COMMIT_SHA`` win over what git
    says, as in ddtrace; CI systems set them when the checkout has no ``.git``.
    """
    found = {
        "git.repository_url": os.environ.get("DD_GIT_REPOSITORY_URL")
        or _git("config", "--get", "remote.origin.url"),
        "git.branch": os.environ.get("DD_GIT_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git.commit.sha": os.environ.get("DD_GIT_COMMIT_SHA") or _git("rev-parse", "HEAD"),
    }
    return {key: value for key, value in found.items() if value}
