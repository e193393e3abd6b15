"""The pipeline's cheap end-to-end checks with real dvc and git (tiny params, offline).

Full `dvc repro` runs cost half a minute each here, so they are few and do a lot each:
test_reliability (repro, rerun nothing, what a param reruns, killed stages, fresh
clones), test_workflows (metrics, plots, push/pull, experiments), test_default_run.
"""

import os
import subprocess

import pytest

from tests.helpers import ROOT, TINY, copy_project, run, stages_run

BAD_PARAMS = {
    "unknown_model": ({"model": "resnet"}, "model = 'resnet'", "one of cnn, vgg19"),
    "zero_per_class": ({"sample.per_class": 0}, "sample.per_class = 0", "an integer >= 1"),
    "negative_per_class": ({"sample.per_class": -5}, "sample.per_class = -5", "an integer >= 1"),
    "val_plus_test_at_least_1": (
        {"sample.val_size": 0.5, "sample.test_size": 0.5},
        "sample.val_size + sample.test_size = 1.0",
        "a sum below 1",
    ),
    "vgg19_image_size_below_32": (
        {"model": "vgg19", "prepare.image_size": 24},
        "prepare.image_size = 24",
        "at least 32 for vgg19",
    ),
    "missing_weights_path": (
        {"model": "vgg19", "models.vgg19.weights": "/no/such/vgg19.h5"},
        "models.vgg19.weights = '/no/such/vgg19.h5'",
        "does not exist",
    ),
    "unknown_source_form": (
        {"dataset.source": "s3://bucket/covid.zip"},
        "dataset.source = 's3://bucket/covid.zip'",
        "only http and https URLs",
    ),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_params_fail_before_any_work_naming_key_value_and_allowed(tmp_path, case):
    changes, named, allowed = BAD_PARAMS[case]
    project = copy_project(tmp_path / "project", **{**TINY, **changes})
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert f"error: params.yaml: {named} is not allowed: " in proc.stderr and allowed in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # The first stage stopped on it: nothing was downloaded, sampled or trained.
    assert stages_run(proc.stdout) == ["download"] and not (project / "data").exists()


def test_stage_scripts_run_from_the_project_root(tmp_path):
    # The stage scripts find the library without installing it: `python -m stages.X` from the root.
    proc = subprocess.run(
        ["python", "-m", "stages.sample"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert "params.yaml: not found; run the stage from the project root" in proc.stderr


def test_no_pipeline_output_is_committed_to_git():
    # DVC tracks them; a stage output also tracked by git makes `dvc repro` refuse to write it.
    proc = subprocess.run(
        ["git", "ls-files", "data", "models", "metrics", "reports", "dvclive"], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    assert [f for f in proc.stdout.split() if not f.endswith(".gitignore")] == []
