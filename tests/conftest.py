"""Fixtures and the two tiers: plain `pytest` runs the fast tier; `pytest --full` runs everything
(what .ci/run runs). Shared plain code lives in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lungdx.console import configure_logging
from tests.helpers import TINY, copy_project

os.environ.setdefault("LUNGDX_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Library functions called in-process print the `warning: ...` lines the stages print (the
# runner and the command line configure logging the same way; importing lungdx does not).
configure_logging()


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="run every test, the slow tier too: full pipeline runs, benchmarks (what CI runs)")


def _fast_tier(config) -> bool:
    """Slow tests are left out only of a plain run: --full, -m, or tests named on the command line run as asked."""
    return not (config.getoption("full") or config.getoption("markexpr")
                or config.args_source != pytest.Config.ArgsSource.TESTPATHS)


def pytest_report_header(config):
    if _fast_tier(config):
        return "tier: fast (tests marked slow are left out; pytest --full runs them too, as CI does)"
    return "tier: full" if config.getoption("full") else None


def pytest_collection_modifyitems(config, items):
    if _fast_tier(config):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
    # Under pytest-xdist the longest tests must start first; left to the end they run alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def project(tmp_path) -> Path:
    """The project with tiny params, in a temporary git repository."""
    return copy_project(tmp_path / "project", **TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The library's stages, in order, on tiny synthetic data: a trained model, metrics and report."""
    from lungdx.data import download
    from lungdx.evaluate import evaluate
    from lungdx.features import extract
    from lungdx.prepare import prepare
    from lungdx.report import build_report
    from lungdx.sample import sample
    from lungdx.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    params = {"seed": 3, "dataset": {"source": "synthetic", "synthetic": {"per_class": 10, "image_size": 64}},
              "prepare": {"image_size": 48}, "model": "cnn", "gradcam": {"per_class": 2, "layer": None},
              "models": {"cnn": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "filters": [8, 16, 32],
                                 "dense_units": 16}}}
    download(params, root / "raw")
    sample(root / "raw", root / "sampled", {"seed": 3, "classes": [], "per_class": 10, "val_size": 0.2,
                                             "test_size": 0.2})
    prepare(root / "sampled" / "manifest.csv", root / "raw", root / "prepared", 48)
    extract(params, root / "prepared", root / "features")
    train(params, root / "prepared", root / "features", root / "models" / "model.keras", root / "dvclive")
    evaluate(root / "models" / "model.keras", root / "prepared", root / "sampled" / "manifest.csv",
             root / "eval.json", root / "eval_details.json", root / "plots")
    build_report(params, root / "models" / "model.keras", root / "prepared", root / "sampled" / "manifest.csv",
                 root / "eval_details.json", root / "report", root / "gradcam.json")
    return root
