"""End to end with real dvc and git in a temporary repository (tiny params, offline)."""

import subprocess

from tests.conftest import ROOT, run, set_params, stages_run, tree_hashes

DATA_STAGES = ["download", "sample", "prepare"]


def test_repro_runs_the_data_stages_then_nothing_and_model_params_rerun_no_data_stage(project):
    first = run(["dvc", "repro"], project)
    assert stages_run(first.stdout)[:3] == DATA_STAGES
    for out in ("data/raw/COVID/images", "data/sampled/manifest.csv", "data/prepared/train/images.npy"):
        assert (project / out).exists(), out
    raw_before = tree_hashes(project / "data" / "raw")

    second = run(["dvc", "repro"], project)
    assert stages_run(second.stdout) == [], second.stdout

    set_params(project, model="vgg19", **{"models.cnn": {"epochs": 3}})
    third = run(["dvc", "repro"], project)
    assert not set(stages_run(third.stdout)) & set(DATA_STAGES), third.stdout
    # The raw tree is read-only to every stage: nothing changed it.
    assert tree_hashes(project / "data" / "raw") == raw_before

    set_params(project, **{"prepare.image_size": 24})
    fourth = run(["dvc", "repro"], project)
    assert stages_run(fourth.stdout)[0] == "prepare" and "download" not in stages_run(fourth.stdout)


def test_fresh_clone_reproduces_the_same_data_offline(project, tmp_path):
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "lock"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    out = run(["dvc", "repro"], clone)  # no remote, no cache: everything is recomputed offline
    assert stages_run(out.stdout)[:3] == DATA_STAGES
    for name in ("data/sampled/manifest.csv", "data/prepared/test/images.npy", "data/prepared/meta.json"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    status = run(["dvc", "status", "--json"], clone)
    assert status.stdout.strip() == "{}"


def test_a_bad_param_stops_the_stage_with_one_clear_line(project):
    set_params(project, **{"sample.per_class": 0})
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert "error: params.yaml: sample.per_class = 0 is not allowed: an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stage_scripts_run_from_the_project_root(tmp_path):
    # The stage scripts find the library without installing it: `python -m stages.X` from the root.
    proc = subprocess.run(["python", "-m", "stages.sample"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:" + __import__("os").environ["PATH"]})
    assert proc.returncode == 2
    assert "params.yaml: not found; run the stage from the project root" in proc.stderr
