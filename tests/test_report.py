"""The Grad-CAM report as a person sees it: opened from disk in headless Chromium."""

import json
import shutil
import subprocess

import cv2
import pytest

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


def test_report_opens_from_disk_with_every_image_loaded(tiny_run, tmp_path):
    url = (tiny_run / "report" / "index.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", url)
    body = next(line for line in dom.stdout.splitlines() if "<body" in line)
    total = int(body.split('data-images-total="')[1].split('"')[0])
    loaded = int(body.split('data-images-loaded="')[1].split('"')[0])
    assert total == 16 and loaded == total, body

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
    assert 'data-images-loaded="15"' in dom.stdout and "1 image(s) failed to load" in dom.stdout
