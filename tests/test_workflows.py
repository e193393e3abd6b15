"""The experiment workflow a researcher lives in, with real dvc and git (tiny params, offline):
compare commits, share artifacts through a remote, queue experiments."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from lungdx.metrics import HEADLINE
from tests.helpers import ROOT, commit, run, set_params, stages_run, write_image

pytestmark = pytest.mark.slow

OUTPUTS = ("data", "models", "metrics", "dvclive", "reports")


def test_compare_two_commits_register_a_version_get_it_elsewhere_push_delete_and_pull_back(project, tmp_path):
    run(["dvc", "repro"], project)
    commit(project, "first run")
    set_params(project, **{"models.cnn.learning_rate": 0.01, "models.cnn.epochs": 3})
    run(["dvc", "repro"], project)
    commit(project, "higher learning rate")

    # The headline numbers only, the same keys for the model and the forest.
    metrics = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--all", "--json"], project).stdout)
    assert set(metrics) == {"metrics/eval.json", "metrics/baseline.json", "metrics/gradcam.json"}, metrics
    assert set(metrics["metrics/eval.json"]) == set(metrics["metrics/baseline.json"])
    assert {k.split(".")[0] for k in metrics["metrics/eval.json"]} == set(HEADLINE)  # accuracy_ci.lower, ...
    assert set(metrics["metrics/gradcam.json"]) == {
        "lung_energy_share",
        "lung_energy_share_ci.lower",
        "lung_energy_share_ci.upper",
        "lung_energy_chance",
        "pointing_game",
        "pointing_chance",
    }
    assert all(v["diff"] == 0 for v in metrics["metrics/baseline.json"].values()), "the forest did not change"
    assert any(v["diff"] for f in ("metrics/eval.json", "metrics/gradcam.json") for v in metrics[f].values())
    params = json.loads(run(["dvc", "params", "diff", "HEAD~1", "--json"], project).stdout)["params.yaml"]
    assert (params["models.cnn.learning_rate"]["old"], params["models.cnn.learning_rate"]["new"]) == (0.0003, 0.01)
    assert (params["models.cnn.epochs"]["old"], params["models.cnn.epochs"]["new"]) == (2, 3)
    # Whether the change is beyond chance: the two commits' predictions, image by image.
    compared = json.loads(
        run(
            [sys.executable, "-m", "lungdx", "compare", "HEAD~1", "HEAD", "--json"],
            project,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
    )
    n_test = json.loads((project / "reports" / "eval.json").read_text())["n_test"]
    assert compared["n_images"] == n_test and compared["accuracy"]["b"] == pytest.approx(
        json.loads((project / "metrics" / "eval.json").read_text())["accuracy"], abs=1e-6
    )
    run(["dvc", "plots", "diff", "HEAD~1", "-o", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "Confusion-Matrix" in page and "Training-Loss" in page and "HEAD~1" in page

    # Share through a local-folder remote and register a version of the model (a GTO git tag).
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    run(["dvc", "push"], project)
    commit(project, "remote")
    run(["gto", "register", "lung-xray-classifier", "--version", "v1.0.0"], project)
    tags = run(["git", "tag", "--list"], project).stdout.split()
    assert tags == ["lung-xray-classifier@v1.0.0"], tags

    # Then lose every output and the cache: what follows comes from the remote.
    from lungdx.arrays import predict as predict_probs
    from lungdx.model_file import load_model

    images = np.load(project / "data" / "prepared" / "test" / "images.npy")
    model_bytes = (project / "models" / "model.keras").read_bytes()
    before = predict_probs(load_model(project / "models" / "model.keras")[0], images)
    shutil.rmtree(project / ".dvc" / "cache")
    for name in OUTPUTS:
        for path in (project / name).iterdir():
            if path.name != ".gitignore":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    # Get the registered version elsewhere: the file alone predicts.
    shown = run(
        [
            sys.executable,
            "-c",
            "import dvc.api, json, sys; print(json.dumps(dvc.api.artifacts_show("
            "'lung-xray-classifier', version='v1.0.0', repo=sys.argv[1])))",
            str(project),
        ],
        tmp_path,
    ).stdout
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert json.loads(shown) == {"rev": head, "path": "models/model.keras"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(
        ["dvc", "artifacts", "get", str(project), "lung-xray-classifier", "--rev", "v1.0.0", "-o", "classifier.keras"],
        elsewhere,
    )
    assert sorted(p.name for p in elsewhere.iterdir()) == ["classifier.keras"]
    assert (elsewhere / "classifier.keras").read_bytes() == model_bytes
    image = tmp_path / "xray.png"
    write_image(image, images[0])
    predicted = run(
        [sys.executable, "-m", "lungdx", "predict", str(image), "--model", "classifier.keras", "--json"],
        elsewhere,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    probabilities = json.loads(predicted.stdout)[0]["probabilities"]
    np.testing.assert_allclose(list(probabilities.values()), before[0], atol=1e-5)

    # And pull everything back into the project.
    run(["dvc", "pull"], project)
    status = run(["dvc", "status"], project).stdout
    assert "Data and pipelines are up to date" in status, status
    assert stages_run(run(["dvc", "repro"], project).stdout) == []
    after = predict_probs(load_model(project / "models" / "model.keras")[0], images)
    np.testing.assert_array_equal(after, before)


def test_experiments_switch_model_skip_cached_features_and_run_queued_in_parallel(project):
    run(["dvc", "repro"], project)
    commit(project, "baseline")
    vgg = ["dvc", "exp", "run", "-S", "model=vgg19", "-S", "models.vgg19.weights=none"]
    first = run(vgg + ["-n", "vgg19"], project)
    assert stages_run(first.stdout) == ["features", "train", "evaluate", "gradcam"], first.stdout
    second = run(vgg + ["-n", "vgg19-lr", "-S", "models.vgg19.learning_rate=0.01"], project)
    assert stages_run(second.stdout) == ["train", "evaluate", "gradcam"], second.stdout

    for lr in ("0.002", "0.005"):
        run(
            [
                "dvc",
                "exp",
                "run",
                "--queue",
                "-n",
                f"cnn-{lr[-1]}",
                "-S",
                "model=cnn",
                "-S",
                f"models.cnn.learning_rate={lr}",
            ],
            project,
        )
    # The workers `dvc queue start` leaves behind keep the stdout it was given: a pipe would hold
    # `run` until they exit, and an idle temporary worker can linger (it did, for 28 minutes), so
    # its output goes to a file, and the workers are stopped once the queue is done.
    with open(project.parent / "queue-start.log", "w") as log:
        subprocess.run(
            ["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=log, stderr=subprocess.STDOUT, check=True
        )
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(10)  # each `dvc queue status` costs a second of CPU that the queued runs need
    run(["dvc", "queue", "stop"], project, check=False, timeout=120)
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

    # The documented views of this table fit a 160-column terminal, nothing squeezed or cut, and show
    # the columns the docs show (a --keep that matches nothing would only make it narrower).
    for command, columns in documented_exp_show_views():
        table = run(command + ["--no-pager"], project, env={**os.environ, "COLUMNS": "160"}).stdout
        lines = table.splitlines()
        assert "…" not in table and max(map(len, lines)) <= 160, f"{' '.join(command)}:\n{table}"
        header = next(line for line in lines if "Experiment" in line)
        assert column_names(header) == columns, f"{' '.join(command)}:\n{table}"
        assert "vgg19-lr" in table, table

    # Two experiments by name, image by image (their predictions come from the cache).
    text = run(
        [sys.executable, "-m", "lungdx", "compare", "vgg19", "vgg19-lr"],
        project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert "test images, the same in both" in text and "McNemar (exact)" in text, text


def column_names(header: str) -> list[str]:
    return [name for name in re.split(r"\s{2,}|\s*\|\s*", header.strip()) if name]


def documented_exp_show_views() -> list[tuple[list[str], list[str]]]:
    """Every `$ dvc exp show ...` in docs/workflows.md's console blocks, with the columns its output shows."""
    views = []
    for block in re.findall(r"```console\n(.*?)```", (ROOT / "docs" / "workflows.md").read_text(), re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ dvc exp show"):
                shown = next(out for out in lines[i + 1 :] if "Experiment" in out or out.startswith("$ "))
                views.append((shlex.split(line[2:]), column_names(shown)))
    assert len(views) >= 3, "docs/workflows.md shows fewer dvc exp show views than expected"
    return views
