"""Fixtures and the two tiers: plain `pytest` runs the fast tier; `pytest --full` runs everything
(what .ci/run runs). Shared plain code lives in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lungdx.console import configure_logging
from tests.helpers import TINY, copy_project, run_library_stages, settings

os.environ.setdefault("LUNGDX_PROGRESS", "0")
# Library functions called in-process print the `warning: ...` lines the stages print (the
# runner and the command line configure logging the same way; importing lungdx does not).
configure_logging()


LONGEST = (
    "test_default_dvc_repro",
    "test_killed_stages_recover",
    "test_experiments_switch_model",
    "test_compare_two_commits_register",
)


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="run every test, the slow tier too: full pipeline runs, benchmarks (what CI runs)",
    )


def _names_tests(config) -> bool:
    """A test file or a single test named on the command line (a folder is not a name)."""
    return any("::" in arg or Path(arg).is_file() for arg in config.args)


def _fast_tier(config) -> bool:
    """Slow tests are left out unless asked for: by --full, by -m, or by naming them."""
    return not (config.getoption("full") or config.getoption("markexpr") or _names_tests(config))


def pytest_report_header(config):
    return "tier: " + (
        "fast (tests marked slow are left out; pytest --full runs them)" if _fast_tier(config) else "full"
    )


def pytest_collection_modifyitems(config, items):
    if _fast_tier(config):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
    # Under pytest-xdist the longest tests must start first; left to the end they run alone. The
    # four longest (2.5-4.5 min each on 2 cores) lead, so the workers take them in turn. And
    # pytest.ini's --maxschedchunk=1 hands out one test at a time: by default xdist gives each
    # worker a first chunk of a quarter of its share, which put every slow test on one worker.
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            next((i for i, name in enumerate(LONGEST) if name in item.nodeid), len(LONGEST)),
        )
    )


def pytest_terminal_summary(terminalreporter, config):
    # Said at the end, also under -q, so a -k that matched only slow tests does not look like a typo.
    if _fast_tier(config):
        terminalreporter.write_line("fast tier: tests marked slow were left out; pytest --full runs every test")


@pytest.fixture
def project(tmp_path) -> Path:
    """The project with tiny params, in a temporary git repository."""
    return copy_project(tmp_path / "project", **TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The library's stages, in order, on tiny synthetic data: a trained model, metrics and report."""
    from lungdx.download import download

    root = tmp_path_factory.mktemp("tiny_run")
    params = settings(
        {
            "seed": 3,
            "dataset.synthetic.per_class": 10,
            "dataset.synthetic.image_size": 64,
            "sample.per_class": 10,
            "sample.val_size": 0.2,
            "sample.test_size": 0.2,
            "prepare.image_size": 48,
            "model": "cnn",
            "gradcam.per_class": 2,
            "models.cnn.epochs": 2,
            "models.cnn.batch_size": 8,
            "models.cnn.learning_rate": 1e-3,
            "models.cnn.filters": [8, 16, 32],
            "models.cnn.dense_units": 16,
        }
    )
    download(params.download, root / "raw")
    return run_library_stages(root, params)
