"""The Grad-CAM report as a person sees it: opened from disk in headless Chromium; and the
image plots and ROC plot as `dvc plots show` gives them."""

import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest

from lungdx.evaluate import write_plots
from lungdx.gradcam import colorbar
from lungdx.metrics import wilson_interval
from lungdx.report import slug
from tests.helpers import commit, copy_project, run

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path, *args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_files_and_quantitative_check(tiny_run):
    report = tiny_run / "report"
    page = (report / "index.html").read_text()
    scores = json.loads((report / "scores.json").read_text())
    assert scores["model"] == "cnn" and scores["layer"] == "conv2"  # the last conv with a 16x16+ grid at 48 px
    assert set(scores["lesions"]["per_class"]) == {"COVID", "Lung_Opacity", "Viral Pneumonia"}
    assert 0 <= scores["lung_energy_share"]["overall"] <= 1
    headline = json.loads((tiny_run / "gradcam.json").read_text())
    assert headline == {"lung_energy_share": scores["lung_energy_share"]["overall"],
                        "lung_energy_chance": scores["lung_energy_share"]["chance"],
                        "pointing_game": scores["lesions"]["overall"]["pointing_game"],
                        "pointing_chance": scores["lesions"]["overall"]["pointing_chance"]}
    for cls in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"):
        assert f"<h2>{cls}</h2>" in page
    assert "test accuracy" in page and "Confusion matrix" in page and "Pointing game" in page
    assert page.count("<figure") == 8  # gradcam.per_class = 2, four classes


def figures(page: str) -> list[str]:
    return re.findall(r"<figure.*?</figure>", page, re.S)


def test_report_shows_the_colour_bar_the_accuracy_interval_and_the_lung_outline_key(tiny_run):
    report = tiny_run / "report"
    page = (report / "index.html").read_text()
    assert 'src="img/colorbar.png"' in page and "0 = no evidence" in page and "1 = strongest" in page
    np.testing.assert_array_equal(cv2.imread(str(report / "img" / "colorbar.png")), colorbar(256))
    cm = np.array(json.loads((tiny_run / "eval_details.json").read_text())["confusion_matrix"])
    low, high = wilson_interval(int(np.trace(cm)), int(cm.sum()))
    assert f"95% CI {low:.3f}&ndash;{high:.3f}" in page and "Wilson" in page
    assert "lung outline" in page  # the synthetic data has lung masks


def test_every_figure_gives_every_class_probability_and_highlights_the_prediction(tiny_run):
    page = (tiny_run / "report" / "index.html").read_text()
    for fig in figures(page):
        rows = re.findall(r'<tr class="(predicted|)"><td>([^<]+)</td>.*?<td class="p">([0-9.]+)</td></tr>', fig)
        assert [name for _, name, _ in rows] == CLASSES, fig
        p = np.array([float(v) for _, _, v in rows])
        assert abs(p.sum() - 1) <= 0.005, p
        predicted = re.search(r"predicted <b>([^<]+)</b>", fig)[1]
        assert [name for mark, name, _ in rows if mark] == [predicted]
        assert p[CLASSES.index(predicted)] == p.max()


def test_a_misclassified_image_also_shows_its_true_class_heatmap(tiny_run):
    report = tiny_run / "report"
    figs = figures((report / "index.html").read_text())
    wrong = [f for f in figs if 'class="wrong"' in f]
    assert wrong, "the tiny model misclassifies some test images: nothing checked otherwise"
    for fig in figs:
        i = re.search(r'data-image="(\d+)"', fig)[1]
        true = re.search(r"true <b>([^<]+)</b>", fig)[1]
        predicted = re.search(r"predicted <b>([^<]+)</b>", fig)[1]
        if fig in wrong:
            assert true != predicted
            assert re.findall(r'<img src="([^"]+)"', fig) == [f"img/{i}.png", f"img/{i}_cam.png", f"img/{i}_true.png"]
            assert f"predicted class, <b>{predicted}</b>" in fig and f"true class, <b>{true}</b>" in fig
            pred_map = cv2.imread(str(report / "img" / f"{i}_cam.png")).astype(int)
            true_map = cv2.imread(str(report / "img" / f"{i}_true.png")).astype(int)
            assert np.abs(pred_map - true_map).max() > 30, "two classes, two different heatmaps"
        else:
            assert true == predicted and f"img/{i}_true.png" not in fig


def test_report_opens_from_disk_with_every_image_loaded(tiny_run, tmp_path):
    url = (tiny_run / "report" / "index.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", url)
    body = next(line for line in dom.stdout.splitlines() if "<body" in line)
    total = int(body.split('data-images-total="')[1].split('"')[0])
    loaded = int(body.split('data-images-loaded="')[1].split('"')[0])
    page = (tiny_run / "report" / "index.html").read_text()
    assert total == page.count("<img ") and loaded == total, body  # the colour bar included

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", url)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert img.std() > 20, "the screenshot is blank"
    # The X-ray pictures are there: a good share of the page is mid-gray or coloured, not white.
    assert (img.mean(axis=2) < 200).mean() > 0.1


def test_a_missing_image_is_reported_on_the_page(tiny_run, tmp_path):
    broken = tmp_path / "report"
    shutil.copytree(tiny_run / "report", broken)
    next((broken / "img").glob("*_cam.png")).unlink()
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", (broken / "index.html").as_uri())
    total = (broken / "index.html").read_text().count("<img ")
    assert f'data-images-loaded="{total - 1}"' in dom.stdout and "1 image(s) failed to load" in dom.stdout


def test_image_plots_are_each_class_first_test_images_under_stable_names(tiny_run):
    labels = np.load(tiny_run / "prepared" / "test" / "labels.npy")
    expected = {f"{slug(c)}_{k}.png" for i, c in enumerate(CLASSES) for k in range(1, min(3, (labels == i).sum()) + 1)}
    assert {p.name for p in (tiny_run / "gradcam_images").iterdir()} == expected
    picture = cv2.imread(str(tiny_run / "gradcam_images" / "Viral_Pneumonia_1.png"))
    assert picture.shape == (256 + 44, 2 * 256 + 4, 3)  # the X-ray and its heatmap, over two lines of text


def test_dvc_plots_show_draws_the_roc_of_every_class_and_the_gradcam_images(tiny_run, tmp_path):
    """The project's plots section and ROC template, on tiny_run's outputs placed where the stages write them."""
    project = copy_project(tmp_path / "project")
    for src, dest in [("plots", "metrics/plots"), ("gradcam_images", "reports/gradcam_images"),
                      ("dvclive/plots", "dvclive/train/plots")]:
        shutil.copytree(tiny_run / src, project / dest)
    out = tmp_path / "shown"
    run(["dvc", "plots", "show", "-o", str(out)], project)
    page = (out / "index.html").read_text()
    for png in (project / "reports" / "gradcam_images").iterdir():
        static = out / "static" / f"workspace_reports_gradcam_images_{png.name}"
        assert f'<img src="static/{static.name}">' in page and static.read_bytes() == png.read_bytes()

    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    loss = shown["Training-Loss"][0]["content"]
    assert loss["encoding"]["x"]["title"] == "epoch"
    assert min(int(row["step"]) for row in loss["data"]["values"]) == 1
    spec = shown["ROC"][0]["content"]
    assert spec["facet"]["field"] == "rev" and spec["spec"]["encoding"]["x"]["field"] == "fpr"
    data = pd.DataFrame(spec["data"]["values"])
    roc = pd.read_csv(project / "metrics" / "plots" / "roc.csv")
    assert sorted(data["curve"].unique()) == sorted(roc["curve"].unique())
    assert sorted(data["class"].unique()) == sorted(CLASSES + ["chance"])
    assert "ROC" in page and "Training-Loss" in page

    # Two revisions: one panel each (the facet on rev), each curve named with its own revision's AUC.
    commit(project, "first run")
    y_true = np.arange(40) % 4
    write_plots(project / "metrics" / "plots", y_true, np.eye(4)[y_true] * 0.6 + 0.1, CLASSES, ["x.png"] * 40)
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], project).stdout)["data"]["ROC"][0]
    assert sorted(diff["revisions"]) == ["HEAD", "workspace"]
    curves = pd.DataFrame(diff["content"]["data"]["values"]).groupby("rev")["curve"].unique()
    assert sorted(curves["workspace"]) == [f"{c} (AUC 1.000)" for c in CLASSES] + ["chance (AUC 0.500)"]
    assert sorted(curves["HEAD"]) == sorted(roc["curve"].unique())
