"""Every test gets its own Assay home, so no test reads or writes the user's store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay import LLMObs


@pytest.fixture(autouse=True)
def assay_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("assay-home")
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.delenv("ASSAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("ASSAY_PROGRESS", "0")
    for variable in (
        "DD_SITE",
        "DD_API_KEY",
        "DD_APP_KEY",
        "DD_LLMOBS_PROJECT_NAME",
        "DD_LLMOBS_ENABLED",
    ):
        monkeypatch.delenv(variable, raising=False)
    yield home
    LLMObs.disable()


@pytest.fixture
def llmobs(assay_home: Path) -> Iterator[type[LLMObs]]:
    """LLMObs enabled on a fresh embedded store."""
    LLMObs.enable(project_name="test-project")
    yield LLMObs
    LLMObs.disable()
