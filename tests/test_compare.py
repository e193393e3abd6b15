"""`lungdx compare A B`: two runs on the same test images, image by image."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lungdx.compare import compare, read_predictions
from lungdx.errors import LungdxError
from tests.helpers import ROOT, run

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


def predictions(y_true, y_pred, paths=None) -> pd.DataFrame:
    paths = paths if paths is not None else [f"{CLASSES[t]}/images/{i}.png" for i, t in enumerate(y_true)]
    return pd.DataFrame(
        {"path": paths, "actual": [CLASSES[i] for i in y_true], "predicted": [CLASSES[i] for i in y_pred]}
    )


def noisy(y_true, accuracy, rng):
    """Predictions right with probability `accuracy`, else another class."""
    wrong = rng.random(len(y_true)) > accuracy
    return np.where(wrong, (y_true + rng.integers(1, len(CLASSES), len(y_true))) % len(CLASSES), y_true)


def test_a_planted_difference_is_found_and_a_null_one_is_not():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 400)
    a = noisy(y_true, 0.75, rng)
    better = np.where(rng.random(400) < 0.6, y_true, a)  # B fixes about 60% of A's errors
    found = compare(predictions(y_true, a), predictions(y_true, better), seed=0)
    assert found["differs"] and found["mcnemar"]["p_value"] < 1e-6 and found["mcnemar"]["b10"] == 0
    assert found["accuracy"]["difference"] == pytest.approx((better == y_true).mean() - (a == y_true).mean())
    assert 0 < found["accuracy"]["lower"] < found["accuracy"]["difference"] < found["accuracy"]["upper"]
    assert found["f1_macro"]["lower"] > 0 and found["accuracy"]["p_value"] < 0.01

    same_skill = noisy(y_true, 0.75, np.random.default_rng(2))  # another model, as good as A
    null = compare(predictions(y_true, a), predictions(y_true, same_skill), seed=0)
    assert null["mcnemar"]["p_value"] > 0.05 and not null["differs"]
    assert null["accuracy"]["lower"] < 0 < null["accuracy"]["upper"]


def test_null_comparisons_reject_about_five_percent_of_the_time():
    rng = np.random.default_rng(3)
    rejected = 0
    for _ in range(300):
        y_true = rng.integers(0, 3, 200)
        a, b = noisy(y_true, 0.8, rng), noisy(y_true, 0.8, rng)
        rejected += compare(predictions(y_true, a), predictions(y_true, b), resamples=200, seed=0)["differs"]
    assert 0.01 <= rejected / 300 <= 0.08  # exact McNemar is conservative: at most about 5%, but it does reject


def test_rows_are_paired_by_image_not_by_order_and_other_splits_are_refused():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 3, 50)
    a = predictions(y_true, noisy(y_true, 0.7, rng))
    shuffled = a.sample(frac=1, random_state=0)
    same = compare(a, shuffled, seed=0)
    assert same["accuracy"]["difference"] == 0 and same["mcnemar"]["b01"] == same["mcnemar"]["b10"] == 0
    other = a.copy()
    other.loc[0, "path"] = "elsewhere.png"
    with pytest.raises(LungdxError, match=r"different test images \(1 only in A, 1 only in B\)"):
        compare(a, other)
    relabelled = a.copy()
    relabelled.loc[3, "actual"] = "Normal" if a.loc[3, "actual"] != "Normal" else "COVID"
    with pytest.raises(LungdxError, match="different true classes for 1 test images"):
        compare(a, relabelled)


def test_read_predictions_refuses_what_is_not_a_predictions_table(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.png,COVID\n")
    with pytest.raises(LungdxError, match=r"no actual, predicted column"):
        read_predictions(str(bad))
    with pytest.raises(LungdxError, match=r"no-such-rev: neither a predictions file nor a revision"):
        read_predictions("no-such-rev", repo=tmp_path)


@pytest.mark.slow  # git, dvc and four CLI runs
def test_cli_compares_two_git_revisions_and_two_files(tmp_path):
    """Revisions are read with dvc (here the table is in git); files directly; text and JSON agree."""
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 3, 120)
    repo = tmp_path / "repo"
    (repo / "metrics" / "plots").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    for i, accuracy in enumerate((0.6, 0.9)):
        predictions(y_true, noisy(y_true, accuracy, rng)).to_csv(
            repo / "metrics" / "plots" / "predictions.csv", index=False
        )
        (tmp_path / f"{i}.csv").write_bytes((repo / "metrics" / "plots" / "predictions.csv").read_bytes())
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"run {i}"], repo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "lungdx", "compare"]
    by_rev = json.loads(
        subprocess.run(
            cli + ["HEAD~1", "HEAD", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    by_file = json.loads(
        subprocess.run(
            cli + [str(tmp_path / "0.csv"), str(tmp_path / "1.csv"), "--json"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {k: v for k, v in by_rev.items() if k not in ("a", "b")} == {
        k: v for k, v in by_file.items() if k not in ("a", "b")
    }
    assert by_rev["differs"] and by_rev["accuracy"]["difference"] > 0.2
    text = subprocess.run(cli + ["HEAD~1", "HEAD"], cwd=repo, env=env, capture_output=True, text=True).stdout
    assert "120 test images, the same in both" in text and "B's accuracy differs from A's beyond chance" in text
    missing = subprocess.run(cli + ["HEAD", "nothing-here"], cwd=repo, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "nothing-here: neither a predictions file" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (b"path,actual,predicted\n", "no test images in it"),
        (b"\xff\xfe\x00p\x00a", "not a predictions table"),
        (b"path,actual,predicted\nx.png,COVID,\n", "row 2 has an empty path, actual or predicted value"),
    ],
)
def test_malformed_tables_are_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(LungdxError, match=message):
        read_predictions(str(bad))


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(LungdxError, match="not a regular file"):
        read_predictions(str(fifo))


@pytest.mark.slow  # git and dvc
def test_a_revision_whose_outputs_are_not_in_the_cache_is_one_line(tmp_path):
    """A fresh clone: dvc.lock names the predictions, the cache does not hold them."""
    repo = tmp_path / "repo"
    (repo / "metrics" / "plots").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "metrics" / "plots" / "predictions.csv").write_text("path,actual,predicted\nx.png,A,A\n")
    run(["dvc", "add", "metrics/plots"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tracked by dvc"], repo)
    import shutil

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "metrics" / "plots")
    with pytest.raises(
        LungdxError, match=r"HEAD: neither a predictions file nor a revision .*must be in the cache \(dvc pull"
    ):
        read_predictions("HEAD", repo=repo)


@pytest.mark.slow  # git and dvc
def test_odd_revision_names_and_an_undecodable_table_at_a_revision_are_one_line(tmp_path):
    """A name of a file or tree (not a commit), an empty name, and bytes that are not UTF-8 at a
    revision: each one line, as the same problem in a file is."""
    repo = tmp_path / "repo"
    (repo / "metrics" / "plots").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "metrics" / "plots" / "predictions.csv").write_bytes(b"\xff\xfe\x00p\x00a")
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a broken table"], repo)
    with pytest.raises(LungdxError, match=r"^HEAD:metrics/plots/predictions.csv: not a predictions table"):
        read_predictions("HEAD", repo=repo)
    for name in ("HEAD:.dvcignore", "HEAD^{tree}", "HEAD:"):
        with pytest.raises(LungdxError, match="neither a predictions file nor a revision"):
            read_predictions(name, repo=repo)
    with pytest.raises(LungdxError, match="an empty name"):
        read_predictions(" ", repo=repo)


def test_the_forest_of_the_baseline_stage_is_compared_with_the_model_image_by_image(tiny_run, tmp_path):
    """The baseline stage writes the forest's predictions in the evaluate stage's format, for the
    same test images, so `compare` pairs the forest with the trained model."""
    from lungdx.baseline import baseline
    from tests.helpers import settings

    forest_csv = tmp_path / "baseline_predictions.csv"
    base = settings({"seed": 3, "baseline.image_size": 16, "baseline.n_estimators": 20}).baseline
    result = baseline(
        base,
        tiny_run / "prepared",
        tiny_run / "sampled" / "manifest.csv",
        tmp_path / "baseline.json",
        tmp_path / "details.json",
        forest_csv,
    )
    forest, model = read_predictions(str(forest_csv)), read_predictions(str(tiny_run / "plots" / "predictions.csv"))
    assert list(forest.columns) == list(model.columns) and sorted(forest["path"]) == sorted(model["path"])
    assert (forest["actual"] == forest["predicted"]).mean() == pytest.approx(result["random_forest"]["accuracy"])
    probs = forest[[c for c in forest.columns if c.startswith("p_")]].astype(float).to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    out = compare(forest, model, seed=3, resamples=200, names=("forest", "cnn"))
    assert out["n_images"] == len(model) and 0 <= out["mcnemar"]["p_value"] <= 1
