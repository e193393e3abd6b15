"""The main job as a user runs it: `dvc repro` on the default params in a fresh clone, offline.

This is the slowest test (a few minutes on 2 cores): it runs benchmarks.default_run (which
times the job; no time is asserted here) on the working tree, and checks the accuracy and
Grad-CAM localisation the project promises.
"""

import json

import pytest

from tests.helpers import copy_project, run_benchmark


@pytest.mark.slow
def test_default_dvc_repro_cnn_beats_the_random_forest(tmp_path):
    project = copy_project(tmp_path / "project")  # the working tree, committed: what a clone would get
    result = run_benchmark("default_run", "--repo", str(project), "--workdir", str(tmp_path / "bench"))
    clone = tmp_path / "bench" / "clone"
    print(f"default run: {json.dumps(result)}")
    model = json.loads((clone / "reports" / "eval.json").read_text())
    forest = json.loads((clone / "metrics" / "baseline.json").read_text())
    assert result["stages_run"] == [
        "download",
        "sample",
        "segment",
        "prepare",
        "baseline",
        "features",
        "train",
        "evaluate",
        "gradcam",
    ]
    assert result["accuracy"] == model["accuracy"] and result["random_forest_accuracy"] == forest["accuracy"]
    assert model["model"] == "cnn" and model["n_test"] == 160
    assert model["accuracy"] >= 0.90, model
    assert model["accuracy"] - forest["accuracy"] >= 0.15, (model["accuracy"], forest["accuracy"])

    # Where the model looks: the heatmap's peak lands on the lesion far above chance, per lesion class.
    cam = json.loads((clone / "reports" / "gradcam" / "scores.json").read_text())
    print(f"default run: gradcam {json.dumps(cam['lesions'])}")
    for cls, score in cam["lesions"]["per_class"].items():
        assert score["pointing_game"] >= 0.6, (cls, score)
        assert score["pointing_game"] >= 3 * score["pointing_chance"], (cls, score)
        assert score["energy_in_lesion"] >= 3 * score["energy_chance"], (cls, score)
