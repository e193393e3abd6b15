"""End to end with real dvc and git in a temporary repository (tiny params, offline).

Full `dvc repro` runs cost half a minute each here, so each test does as few as
its claim needs, and `dvc repro --dry` answers "which stages would run?".
"""

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, TINY, commit, copy_project, run, set_params, stages_run, tree_hashes

DATA_STAGES = ["download", "sample", "prepare"]
ALL_STAGES = DATA_STAGES + ["baseline", "features", "train", "evaluate", "gradcam"]


def test_repro_runs_every_stage_then_nothing_and_model_params_rerun_no_data_stage(project):
    first = run(["dvc", "repro"], project)
    assert stages_run(first.stdout) == ALL_STAGES
    for out in ("data/raw/COVID/images", "data/sampled/manifest.csv", "data/prepared/train/images.npy",
                "models/model.keras", "models/classes.json", "metrics/eval.json", "metrics/baseline.json",
                "dvclive/train/metrics.json", "reports/gradcam/index.html", "metrics/gradcam.json"):
        assert (project / out).exists(), out
    assert stages_run(run(["dvc", "repro"], project).stdout) == []

    set_params(project, model="vgg19", **{"models.cnn.epochs": 3, "models.vgg19.learning_rate": 0.01})
    assert stages_run(run(["dvc", "repro", "--dry"], project).stdout) == ["features", "train"]
    run(["git", "checkout", "params.yaml"], project)
    set_params(project, **{"models.cnn.epochs": 3})
    assert stages_run(run(["dvc", "repro", "--dry"], project).stdout) == ["train"]
    set_params(project, **{"prepare.image_size": 40})
    assert stages_run(run(["dvc", "repro", "--dry"], project).stdout)[0] == "prepare"


@pytest.mark.slow
def test_fresh_clone_reproduces_byte_identical_outputs_offline(project, tmp_path):
    run(["dvc", "repro"], project)
    raw_before = tree_hashes(project / "data" / "raw")
    commit(project, "lock")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    out = run(["dvc", "repro"], clone)  # no remote, no cache: everything is recomputed offline
    assert stages_run(out.stdout) == ALL_STAGES
    for name in ("data/sampled/manifest.csv", "data/prepared/test/images.npy", "data/prepared/meta.json",
                 "metrics/eval.json", "metrics/baseline.json"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    assert run(["dvc", "status", "--json"], clone).stdout.strip() == "{}"
    # The raw tree is read-only to every stage: the whole pipeline left it as download wrote it.
    assert tree_hashes(project / "data" / "raw") == raw_before == tree_hashes(clone / "data" / "raw")

    files = next(iter(json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout).values()))["data"]
    assert {"metrics/eval.json", "metrics/baseline.json", "metrics/gradcam.json",
            "dvclive/train/metrics.json"} <= set(files)
    assert "accuracy" in files["metrics/eval.json"]["data"]
    assert "accuracy" in files["metrics/baseline.json"]["data"]["random_forest"]


BAD_PARAMS = {
    "unknown_model": ({"model": "resnet"}, "model = 'resnet'", "one of cnn, vgg19"),
    "zero_per_class": ({"sample.per_class": 0}, "sample.per_class = 0", "an integer >= 1"),
    "negative_per_class": ({"sample.per_class": -5}, "sample.per_class = -5", "an integer >= 1"),
    "val_plus_test_at_least_1": ({"sample.val_size": 0.5, "sample.test_size": 0.5},
                                 "sample.val_size + sample.test_size = 1.0", "a sum below 1"),
    "vgg19_image_size_below_32": ({"model": "vgg19", "prepare.image_size": 24}, "prepare.image_size = 24",
                                  "at least 32 for vgg19"),
    "missing_weights_path": ({"model": "vgg19", "models.vgg19.weights": "/no/such/vgg19.h5"},
                             "models.vgg19.weights = '/no/such/vgg19.h5'", "does not exist"),
    "unknown_source_form": ({"dataset.source": "s3://bucket/covid.zip"}, "dataset.source = 's3://bucket/covid.zip'",
                            "only http and https URLs"),
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
    proc = subprocess.run(["python", "-m", "stages.sample"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "params.yaml: not found; run the stage from the project root" in proc.stderr


def test_no_pipeline_output_is_committed_to_git():
    # DVC tracks them; a stage output also tracked by git makes `dvc repro` refuse to write it.
    proc = subprocess.run(["git", "ls-files", "data", "models", "metrics", "reports", "dvclive"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    assert [f for f in proc.stdout.split() if not f.endswith(".gitignore")] == []
