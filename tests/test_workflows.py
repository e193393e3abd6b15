"""The experiment workflow a researcher lives in, with real dvc and git (tiny params, offline):
compare commits, share artifacts through a remote, queue experiments."""

import json
import shutil
import time

import numpy as np

import pytest

from tests.conftest import commit, run, set_params, stages_run

pytestmark = pytest.mark.slow

OUTPUTS = ("data", "models", "metrics", "dvclive", "reports")


def test_compare_two_commits_then_push_delete_and_pull_everything_back(project, tmp_path):
    run(["dvc", "repro"], project)
    commit(project, "first run")
    set_params(project, **{"models.cnn.learning_rate": 0.01, "models.cnn.epochs": 3})
    run(["dvc", "repro"], project)
    commit(project, "higher learning rate")

    metrics = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], project).stdout)
    changed = {(f, k) for f, entries in metrics.items() for k, v in entries.items() if v.get("diff")}
    assert ("dvclive/train/metrics.json", "train.loss") in changed, metrics
    assert ("dvclive/train/metrics.json", "epochs_run") in changed, metrics
    params = json.loads(run(["dvc", "params", "diff", "HEAD~1", "--json"], project).stdout)["params.yaml"]
    assert (params["models.cnn.learning_rate"]["old"], params["models.cnn.learning_rate"]["new"]) == (0.0003, 0.01)
    assert (params["models.cnn.epochs"]["old"], params["models.cnn.epochs"]["new"]) == (2, 3)
    run(["dvc", "plots", "diff", "HEAD~1", "-o", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "Confusion-Matrix" in page and "Training-Loss" in page and "HEAD~1" in page

    # Share through a local-folder remote; then lose every output and the cache, and pull them back.
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    run(["dvc", "push"], project)
    from lungdx.evaluate import load_model, predict_probs

    images = np.load(project / "data" / "prepared" / "test" / "images.npy")
    before = predict_probs(load_model(project / "models")[0], images)
    shutil.rmtree(project / ".dvc" / "cache")
    for name in OUTPUTS:
        for path in (project / name).iterdir():
            if path.name != ".gitignore":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(["dvc", "pull"], project)
    status = run(["dvc", "status"], project).stdout
    assert "Data and pipelines are up to date" in status, status
    assert stages_run(run(["dvc", "repro"], project).stdout) == []
    after = predict_probs(load_model(project / "models")[0], images)
    np.testing.assert_array_equal(after, before)


def test_experiments_switch_model_skip_cached_features_and_run_queued_in_parallel(project):
    run(["dvc", "repro"], project)
    commit(project, "baseline")
    vgg = ["dvc", "exp", "run", "-S", "model=vgg19", "-S", "models.vgg19.weights=none"]
    first = run(vgg, project)
    assert stages_run(first.stdout) == ["features", "train", "evaluate", "gradcam"], first.stdout
    second = run(vgg + ["-S", "models.vgg19.learning_rate=0.01"], project)
    assert stages_run(second.stdout) == ["train", "evaluate", "gradcam"], second.stdout

    for lr in ("0.002", "0.005"):
        run(["dvc", "exp", "run", "--queue", "-S", "model=cnn", "-S", f"models.cnn.learning_rate={lr}"], project)
    run(["dvc", "queue", "start", "-j", "2"], project)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    rows = [rev for rev in shown] + [e["revs"][0] for rev in shown for e in (rev.get("experiments") or [])]
    accuracy = {}
    for row in rows:
        data = row.get("data") or {}
        metric = (data.get("metrics") or {}).get("metrics/eval.json", {}).get("data", {})
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        if "accuracy" in metric:
            model = params["model"]
            accuracy[(row["rev"], model, params["models"][model]["learning_rate"])] = metric["accuracy"]
    revs = {rev for rev, *_ in accuracy}
    assert "workspace" in revs and len(revs) == 6, accuracy  # workspace, the baseline commit, 4 experiments
    runs = {(model, lr) for _, model, lr in accuracy}
    assert {("cnn", 0.0003), ("vgg19", 0.001), ("vgg19", 0.01), ("cnn", 0.002), ("cnn", 0.005)} <= runs, accuracy
