"""Every documentation page is a program: its Python examples run, in order, as written.

Each page (and README.md) runs in one namespace of its own, block after block, with the
isolated ``ASSAY_HOME`` of the autouse fixture and the test's temporary folder as the
working directory, so examples may write files such as ``questions.csv``. Blocks marked
``python`` run; any other fence must say what it is (``console``, ``text``...), so that no
Python example escapes the test by a misspelled marker. The site must also build with
``mkdocs build --strict`` and list every page in its navigation.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay import LLMObs
from assay.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# Fences that are not Python code, by their info string.
OTHER_FENCES = {"console", "text", "yaml", "json", "toml"}
FENCE = re.compile(r"^```(?P<info>[^`\s]*)\s*$")


def fenced_blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """Every fenced block as (info string, line number of its first code line, code)."""
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        opening = FENCE.match(lines[position])
        if opening is None:
            position += 1
            continue
        start = position + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"the fence opened on line {position + 1} is never closed")
        yield opening["info"], start + 1, "\n".join(lines[start:end]) + "\n"
        position = end + 1


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """Examples may set ASSAY_* variables, as users do; no page leaks them to the next."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_there_are_pages() -> None:
    assert (ROOT / "README.md") in PAGES
    assert len(PAGES) > 1, "docs/ has no pages"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_fence_says_what_it_holds(page: Path) -> None:
    for info, line, _code in fenced_blocks(page.read_text(encoding="utf-8")):
        assert info == "python" or info in OTHER_FENCES, (
            f"{page_id(page)}:{line - 1}: fence '```{info}' is neither ```python (run by this "
            f"test) nor one of {sorted(OTHER_FENCES)}"
        )


OWN_PROCESS = {"ray.md"}
"""Pages whose examples run as a script of their own, as a reader runs them: the Ray page
starts and stops a Ray of its own, which must not share a process with the Ray tests."""


def _run_in_own_process(blocks: list[tuple[int, str]], page: Path, folder: Path) -> None:
    lines: list[str] = []
    for line, code in blocks:
        # Padding keeps the line numbers of a traceback those of the Markdown file.
        lines += [""] * (line - 1 - len(lines))
        lines += code.splitlines()
    script = folder / f"example_{page.stem}.py"  # not ray.py, which would shadow ray
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # ray.init() joins a cluster it finds running on the machine (another test's, another
    # test run's); the page's example must start its own, as on a reader's laptop.
    environment = {**os.environ, "ASSAY_HOME": str(folder / "home"), "RAY_ADDRESS": "local"}
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert ran.returncode == 0, f"{page.name}'s examples failed:\n{ran.stdout}\n{ran.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
@pytest.mark.usefixtures("restored_environment")
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [
        (line, code)
        for info, line, code in fenced_blocks(page.read_text(encoding="utf-8"))
        if info == "python"
    ]
    monkeypatch.chdir(tmp_path)
    if page.name in OWN_PROCESS:
        _run_in_own_process(blocks, page, tmp_path)
        return
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        for line, code in blocks:
            # Padding keeps the line numbers of a traceback those of the Markdown file.
            compiled = compile("\n" * (line - 1) + code, str(page), "exec")
            exec(compiled, namespace)
    finally:
        LLMObs.disable()


def test_every_page_is_in_the_navigation() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+-\s+[^:\n]+:\s+(\S+\.md)\s*$", text, flags=re.MULTILINE))
    pages = {page.name for page in DOCS.glob("*.md")}
    assert pages - listed == set(), f"pages missing from the nav of mkdocs.yml: {pages - listed}"
    assert listed - pages == set(), f"nav entries without a page: {listed - pages}"


def test_every_setting_is_documented() -> None:
    storage = (DOCS / "storage.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert setting.env in storage, f"{setting.env} is not described in docs/storage.md"
        if setting.env.startswith("ASSAY_"):
            assert setting.env in readme, f"{setting.env} is not named in README.md"


def test_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (it comes with the 'dev' extra)")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--config-file",
            str(CONFIG),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr or built.stdout
    assert (tmp_path / "site" / "index.html").exists()
