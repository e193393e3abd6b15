"""The main job as a user runs it: `dvc repro` on the default params, offline.

This is the slowest test (a few minutes on 2 cores): it trains the default CNN
on the default synthetic data and checks the accuracy the project promises.
"""

import json

import pytest

from tests.conftest import copy_project, run, stages_run


@pytest.mark.slow
def test_default_dvc_repro_cnn_beats_the_random_forest(tmp_path):
    project = copy_project(tmp_path / "project")
    out = run(["dvc", "repro"], project)
    assert stages_run(out.stdout) == ["download", "sample", "prepare", "baseline", "features", "train", "evaluate",
                                      "gradcam"]
    model = json.loads((project / "metrics" / "eval.json").read_text())
    forest = json.loads((project / "metrics" / "baseline.json").read_text())["random_forest"]
    print(f"default run: cnn accuracy {model['accuracy']}, random forest {forest['accuracy']}")
    assert model["model"] == "cnn" and model["n_test"] == 160
    assert model["accuracy"] >= 0.90, model
    assert model["accuracy"] - forest["accuracy"] >= 0.15, (model["accuracy"], forest["accuracy"])

    # Where the model looks: the heatmap's peak lands on the lesion far above chance, per lesion class.
    cam = json.loads((project / "metrics" / "gradcam.json").read_text())
    print(f"default run: gradcam {json.dumps(cam['lesions'])}")
    for cls, score in cam["lesions"]["per_class"].items():
        assert score["pointing_game"] >= 0.6, (cls, score)
        assert score["pointing_game"] >= 3 * score["pointing_chance"], (cls, score)
        assert score["energy_in_lesion"] >= 3 * score["energy_chance"], (cls, score)
