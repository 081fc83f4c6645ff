"""A failing browser test leaves a screenshot behind for whoever debugs it (issue 4, acceptance 8)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CONFTEST = Path(__file__).with_name("conftest.py")

# The inner run loads this directory's conftest by path, so it gets the same browser, page fixture
# and report hook, without the local stack (the failing test only needs a page).
INNER_CONFTEST = f"""
import importlib.util

_spec = importlib.util.spec_from_file_location("backchat_browser_fixtures", {str(CONFTEST)!r})
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

pytest_runtest_makereport = _fixtures.pytest_runtest_makereport
browser = _fixtures.browser
locale = _fixtures.locale
viewport = _fixtures.viewport
context = _fixtures.context
page = _fixtures.page
"""

INNER_TESTS = """
def test_page_that_breaks(page):
    page.set_content("<h1>The page a failing test saw</h1>")
    assert page.locator("h1").text_content() == "something else"


def test_page_that_works(page):
    page.set_content("<h1>fine</h1>")
"""


def test_a_failing_browser_test_saves_a_screenshot_of_its_page(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(INNER_CONFTEST)
    (project / "test_inner.py").write_text(INNER_TESTS)
    artifacts = tmp_path / "artifacts"

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env={**os.environ, "BACKCHAT_TEST_ARTIFACTS": str(artifacts)},
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    screenshots = sorted(path.name for path in artifacts.glob("*.png"))
    assert screenshots == ["test_inner.py_test_page_that_breaks.png"]
    assert (artifacts / screenshots[0]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
