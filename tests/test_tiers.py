"""The two tiers of tests/conftest.py: plain `pytest` leaves slow tests out; --full, -m, or
naming a test file or a test runs them; a folder is still the fast tier."""

import shutil

import pytest

from tests.helpers import ROOT

pytest_plugins = "pytester"

TESTS = """
import pytest

def test_quick():
    pass

@pytest.mark.slow
def test_long():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    """A copy of our conftest beside one quick and one slow test; no plugins but pytest's own
    (xdist and whatever else is installed would only slow these in-process runs down)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    shutil.copy(ROOT / "tests" / "conftest.py", pytester.path / "conftest.py")
    pytester.makeini("[pytest]\nmarkers =\n    slow: long\n")
    pytester.makepyfile(test_pair=TESTS)
    return pytester


def collected(suite, *args) -> set[str]:
    result = suite.runpytest_inprocess("--collect-only", "-q", *args)
    return {line.split("::")[1] for line in result.outlines if "::" in line}


def test_plain_pytest_is_the_fast_tier_and_says_so(suite):
    assert collected(suite) == {"test_quick"}
    assert collected(suite, str(suite.path)) == {"test_quick"}  # a folder is not a name
    result = suite.runpytest_inprocess("-q", "-k", "long")
    assert "fast tier: tests marked slow were left out" in result.stdout.str()


@pytest.mark.parametrize(
    "args", [["--full"], ["-m", "slow or not slow"], ["test_pair.py"], ["test_pair.py::test_long"]]
)
def test_full_marks_or_named_tests_run_slow_tests(suite, args):
    expected = {"test_long"} if args[-1].endswith("test_long") else {"test_quick", "test_long"}
    assert collected(suite, *args) == expected
