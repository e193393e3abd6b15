"""The Grad-CAM report as a person sees it: opened from disk in headless Chromium, and read by an
HTML parser when the class names are hostile; and the image plots and ROC plot as `dvc plots
show` gives them."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import cv2
import numpy as np
import pandas as pd
import pytest

from lungdx.evaluate import write_plots
from lungdx.gradcam import plot_stems
from lungdx.heatmaps import colorbar
from tests.helpers import commit, copy_project, make_kaggle_dataset, run, run_library_stages, settings

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
    low, high = scores["lung_energy_share"]["overall_ci"].values()
    assert low <= scores["lung_energy_share"]["overall"] <= high
    headline = json.loads((tiny_run / "gradcam.json").read_text())
    assert headline == {
        "lung_energy_share": scores["lung_energy_share"]["overall"],
        "lung_energy_share_ci": scores["lung_energy_share"]["overall_ci"],
        "lung_energy_chance": scores["lung_energy_share"]["chance"],
        "pointing_game": scores["lesions"]["overall"]["pointing_game"],
        "pointing_chance": scores["lesions"]["overall"]["pointing_chance"],
    }
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
    details = json.loads((tiny_run / "eval_details.json").read_text())
    for key in ("accuracy", "f1_macro"):  # the numbers of reports/eval.json, three decimals, the interval's too
        low, high = details[f"{key}_ci"]["lower"], details[f"{key}_ci"]["upper"]
        assert f"<b>{details[key]:.3f}</b> <small>(95% CI [{low:.3f}, {high:.3f}], bootstrap)</small>" in page
    assert f"ROC AUC (one-vs-rest) <b>{details['roc_auc_ovr']:.3f}</b>" in page
    assert "lung outline" in page  # the synthetic data has lung masks


def test_every_number_on_the_page_has_three_decimals(tiny_run):
    """Scores, intervals and probabilities as lungdx.readable writes them: no six-decimal F1 beside
    a two-decimal accuracy; the counts (test images, confusion matrix, pixels) stay whole."""
    page = (tiny_run / "report" / "index.html").read_text()
    text = re.sub(r"<style>.*?</style>|<script>.*?</script>|<[^>]+>", " ", page, flags=re.S)
    decimals = {len(n.split(".")[1]) for n in re.findall(r"\b\d+\.\d+\b", text)}
    assert decimals == {3}, sorted(set(re.findall(r"\b\d+\.\d+\b", text)))
    scores = json.loads((tiny_run / "report" / "scores.json").read_text())
    share = scores["lung_energy_share"]
    assert f"inside the lungs: <b>{share['overall']:.3f}</b>" in page
    assert f"(lungs cover {share['chance']:.3f} of the image)" in page
    assert f"(chance {scores['lesions']['overall']['pointing_chance']:.3f})" in page


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
    stems = ["COVID", "Lung_Opacity", "Normal", "Viral_Pneumonia"]  # the names docs and users rely on
    expected = {f"{stems[i]}_{k}.png" for i in range(4) for k in range(1, min(3, (labels == i).sum()) + 1)}
    assert {p.name for p in (tiny_run / "report_images").iterdir()} == expected
    picture = cv2.imread(str(tiny_run / "report_images" / "Viral_Pneumonia_1.png"))
    assert picture.shape == (256 + 44, 2 * 256 + 4, 3)  # the X-ray and its heatmap, over two lines of text


def test_dvc_plots_show_draws_the_roc_of_every_class_and_the_gradcam_images(tiny_run, tmp_path):
    """The project's plots section and ROC template, on tiny_run's outputs placed where the stages write them."""
    project = copy_project(tmp_path / "project")
    for src, dest in [
        ("plots", "metrics/plots"),
        ("report_images", "reports/gradcam_images"),
        ("dvclive/plots", "dvclive/train/plots"),
    ]:
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
    assert sorted(data["class"].unique()) == sorted(CLASSES + [""])  # "": the chance diagonal
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


HOSTILE = [
    "chance",
    "<img src=x onerror=alert(1)>",
    'a,"b"',
    "=1+1",
    "1_1",
    "Viral Pneumonia",
    "Viral_Pneumonia",
    "日本",
    "中文",
]


def test_plot_names_of_hostile_classes_are_unique_and_readable():
    classes = HOSTILE + ["COVID", "covid", "???", "class", "a", "a_1", "a_1_1", "Café", "Cafe\u0301", "हिन्दी"]
    stems = plot_stems(classes)
    # k up to 12: "<stem>_<k>" cannot collide even past the three slots, whatever the stems end with.
    names = [f"{s}_{k}.png".casefold() for s in stems for k in range(1, 13)]  # case-insensitive file systems too
    assert len(set(names)) == len(names)
    named = dict(zip(classes, stems, strict=True))
    assert [named[c] for c in ("chance", 'a,"b"', "日本", "中文", "class", "a", "a_1", "हिन्दी")] == [
        "chance",
        "a_b",
        "日本",
        "中文",
        "class",
        "a",
        "a_1",
        "हिन्दी",
    ]
    # Clashing pairs both get their class index, after a "-" that no plain name holds.
    for c in ("=1+1", "1_1", "Viral Pneumonia", "Viral_Pneumonia", "COVID", "covid", "Café", "Cafe\u0301", "???"):
        assert named[c].endswith(f"-{classes.index(c)}"), (c, named[c])
    assert named["Viral Pneumonia"].startswith("Viral_Pneumonia-") and named["???"].startswith("class-")


def test_plot_names_of_the_usual_classes_are_their_names():
    assert plot_stems(CLASSES) == ["COVID", "Lung_Opacity", "Normal", "Viral_Pneumonia"]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The stages up to the report on random images in class folders with hostile names."""
    root = tmp_path_factory.mktemp("hostile_run")
    params = settings(
        {
            "seed": 3,
            "dataset.classes": [],
            "sample.per_class": 5,
            "sample.val_size": 0.2,
            "sample.test_size": 0.4,
            "prepare.image_size": 32,
            "baseline.image_size": 8,
            "model": "cnn",
            "gradcam.per_class": 2,
            "gradcam.layer": None,
            "models.cnn.epochs": 1,
            "models.cnn.batch_size": 8,
            "models.cnn.learning_rate": 1e-3,
            "models.cnn.filters": [4, 8],
            "models.cnn.dense_units": 8,
            "models.cnn.warmup_epochs": 0,
        }
    )
    make_kaggle_dataset(root / "raw", {c: 5 for c in HOSTILE}, size=32)
    return run_library_stages(root, params)


class Page(HTMLParser):
    """A page as a browser reads it: every start tag with its attributes, and each piece of text
    with the tag it directly follows (None after an end tag)."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.texts, self.last = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.last = tag

    def handle_endtag(self, tag):
        self.last = None

    def handle_data(self, data):
        self.texts.append((self.last, data))


def manifest_test_rows(run_dir) -> pd.DataFrame:
    """The manifest's test rows, every cell as written."""
    manifest = pd.read_csv(run_dir / "sampled" / "manifest.csv", dtype=str, keep_default_na=False)
    return manifest[manifest["split"] == "test"]


def test_hostile_class_names_and_paths_read_back_as_written(hostile_run):
    page = (hostile_run / "report" / "index.html").read_text()
    parsed = Page(page)

    def texts(tag):
        return [t for last, t in parsed.texts if last == tag]

    classes = list(manifest_test_rows(hostile_run)["class"].unique())
    assert sorted(classes) == sorted(HOSTILE)
    bold = {t for fig in figures(page) for last, t in Page(fig).texts if last == "b"}
    assert bold == set(classes)  # each figure's true and predicted class, its pictures' classes
    assert set(classes) <= set(texts("h2")) and set(classes) <= set(texts("th"))
    captions = set(texts("figcaption"))
    assert captions <= set(manifest_test_rows(hostile_run)["path"])
    assert any(p.startswith("<img src=x onerror=alert(1)>/") for p in captions)

    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == int(re.search(r'data-images-total="(\d+)"', page)[1])  # no <img> came from a name
    assert all((hostile_run / "report" / a["src"]).is_file() for a in images)
    alts = []
    for panel in re.findall(r'<div class="panel">.*?<img [^>]*>', page, re.S):  # a figure's pictures
        read = Page(panel)
        (alt,) = [a["alt"] for tag, a in read.tags if tag == "img"]
        assert "".join(t for _, t in read.texts) == alt  # the label one reads and the alt say the same
        alts.append(alt)
    assert len(alts) == len(images) - 1  # all but the colour bar
    named = [alt.split("class, ", 1)[1] for alt in alts if alt != "X-ray"]
    assert len(named) == len(alts) - page.count("<figure") and set(named) == set(classes)
    # Escaped once: nothing a reader sees holds an escape.
    assert not [t for t in [t for _, t in parsed.texts] + alts if re.search(r"&(lt|gt|amp|quot|#\d+);", t)]


def test_hostile_class_names_get_an_image_plot_each(hostile_run):
    rows = manifest_test_rows(hostile_run)
    counts = rows.groupby(rows["label"].astype(int))["class"].agg(["first", "size"])
    assert counts.index.tolist() == list(range(len(HOSTILE)))  # every class, by class index
    stems = plot_stems(counts["first"].tolist())
    slots = {f"{stem}_{k}.png" for stem, n in zip(stems, counts["size"], strict=True) for k in range(1, min(3, n) + 1)}
    assert len(slots) == sum(min(3, n) for n in counts["size"])  # no two slots share a name
    assert {p.name for p in (hostile_run / "report_images").iterdir()} == slots


def test_every_class_section_says_how_many_are_correct_and_misclassified_and_what_it_shows(tiny_run):
    page = (tiny_run / "report" / "index.html").read_text()
    scores = json.loads((tiny_run / "report" / "scores.json").read_text())
    labels = np.load(tiny_run / "prepared" / "test" / "labels.npy")
    assert list(scores["classes"]) == CLASSES  # every class, in order
    sections = re.split(r"<h2>", page.split("<h2>Test images</h2>")[1])[1:]
    assert [s.split("</h2>")[0] for s in sections] == CLASSES
    for c, (cls, section) in enumerate(zip(CLASSES, sections, strict=True)):
        ex = scores["classes"][cls]
        assert ex["n_test"] == (labels == c).sum() == ex["correct"] + ex["misclassified"]
        figs = figures(section)
        assert ex["shown_misclassified"] == sum('class="wrong"' in f for f in figs)
        assert ex["shown_correct"] == sum('class="right"' in f for f in figs)
        assert (
            f"{ex['n_test']} test images: {ex['correct']} correct, {ex['misclassified']} misclassified; "
            f"shown here: {ex['shown_misclassified']} misclassified, {ex['shown_correct']} correct." in section
        )
        if ex["misclassified"] and ex["correct"]:  # both kinds there: both shown (per_class 2)
            assert ex["shown_misclassified"] and ex["shown_correct"] and not ex["note"]
        else:
            assert ex["note"] and ex["note"][1:] in section


def test_class_examples_say_plainly_what_a_class_lacks():
    from lungdx.gradcam import class_examples, pick_examples

    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 0, 2, 2, 0, 2, 1])
    classes = ["all right", "all wrong", "mixed", "no test image"]
    found = class_examples(y_true, y_pred, classes, pick_examples(y_true, y_pred, 4, 4))
    assert list(found) == classes
    assert found["all right"] == {
        "n_test": 3,
        "correct": 3,
        "misclassified": 0,
        "shown_correct": 3,
        "shown_misclassified": 0,
        "note": "no misclassified test image of this class: all 3 are correct, so only correct ones are shown",
    }
    assert found["all wrong"]["shown_misclassified"] == 2 and found["all wrong"]["note"].startswith(
        "no correctly classified test image of this class: all 2 are misclassified"
    )
    assert found["mixed"]["shown_misclassified"] == 2 and found["mixed"]["shown_correct"] == 2
    assert found["mixed"]["note"] == ""
    assert found["no test image"]["n_test"] == 0 and "no test image" in found["no test image"]["note"]


def test_the_lung_energy_share_is_given_for_every_class_beside_its_chance(tiny_run):
    page = (tiny_run / "report" / "index.html").read_text()
    scores = json.loads((tiny_run / "report" / "scores.json").read_text())
    assert scores["lungs_known"] is True and scores["lungs_from"] == "the dataset's lung mask"
    share = scores["lung_energy_share"]
    labels = np.load(tiny_run / "prepared" / "test" / "labels.npy")
    assert list(share["per_class"]) == CLASSES and share["n"] == len(labels)
    table = re.search(r'<table class="cm lungs">.*?</table>', page, re.S)[0]
    for c, cls in enumerate(CLASSES):
        s = share["per_class"][cls]
        assert s["n"] == (labels == c).sum() and 0 <= s["share"] <= 1 and 0 < s["chance"] < 1
        assert s["share_ci"]["lower"] <= s["share"] <= s["share_ci"]["upper"]
        assert f"<tr><th>{cls}</th><td>{s['n']}</td><td><b>{s['share']:.3f}</b>" in table
        section = page.split(f"<h2>{cls}</h2>")[1].split("<h2>")[0]
        assert f"energy inside the lungs: <b>{s['share']:.3f}</b>" in section
        assert f"(lungs cover {s['chance']:.3f} of the image; {s['n']} images)" in section
    assert "No lungs known" not in page


def test_mask_scores_per_class_leave_out_images_whose_lungs_are_not_known():
    """An empty lung mask (a source with masks for some images only) is no lungs, not lungs of
    zero size: its image counts for neither the share nor the chance; a class with none known says n 0."""
    from lungdx.heatmaps import mask_scores

    heat = np.zeros((4, 10, 10), np.float32)
    heat[:, 0:5, :] = 1.0  # the top half
    lungs = np.zeros((4, 10, 10), np.uint8)
    lungs[0, 0:5, :] = 255  # image 0: all its energy in its lungs, which cover half the image
    lungs[1, :, 0:5] = 255  # image 1: half its energy in its lungs
    found = mask_scores(heat, np.array([0, 0, 1, 1]), ["A", "B"], {"masks": lungs}, seed=0)["lung_energy_share"]
    assert found["overall"] == 0.75 and found["chance"] == 0.5 and found["n"] == 2
    assert found["per_class"]["A"] == {"share": 0.75, "share_ci": {"lower": 0.5, "upper": 1.0}, "chance": 0.5, "n": 2}
    assert found["per_class"]["B"] == {"share": None, "share_ci": None, "chance": None, "n": 0}
    assert mask_scores(heat, np.array([0, 0, 1, 1]), ["A", "B"], {"masks": 0 * lungs}, seed=0) == {}


@pytest.fixture(scope="module")
def maskless_run(tmp_path_factory):
    """The stages up to the report on a raw layout without lung masks."""
    root = tmp_path_factory.mktemp("maskless_run")
    params = settings(
        {
            "seed": 3,
            "dataset.classes": [],
            "sample.per_class": 5,
            "sample.val_size": 0.2,
            "sample.test_size": 0.4,
            "prepare.image_size": 32,
            "model": "cnn",
            "gradcam.per_class": 2,
            "models.cnn.epochs": 1,
            "models.cnn.batch_size": 8,
            "models.cnn.filters": [4, 8],
            "models.cnn.dense_units": 8,
            "models.cnn.warmup_epochs": 0,
        }
    )
    make_kaggle_dataset(root / "raw", {c: 5 for c in CLASSES}, size=32)
    for masks in (root / "raw").glob("*/masks"):
        shutil.rmtree(masks)
    return run_library_stages(root, params)


def test_without_lung_masks_the_report_says_no_lungs_are_known_and_how_to_get_them(maskless_run):
    page = (maskless_run / "report" / "index.html").read_text()
    scores = json.loads((maskless_run / "report" / "scores.json").read_text())
    assert scores["lungs_known"] is False and "lung_energy_share" not in scores
    note = scores["lungs_note"]
    assert note.startswith("no lungs known: ") and "set segment.train_source to a dataset with lung masks" in note
    assert "<b>No lungs known: the test images have no lung masks" in page
    assert "set segment.train_source to a dataset with lung masks" in page
    assert page.count("No lungs known: no lung energy share (see above).") == 4  # in every class's section
    assert "lung outline" not in page and "No lesion masks in this data: no pointing game." in page
    assert json.loads((maskless_run / "gradcam.json").read_text()) == {}
    assert list(scores["classes"]) == CLASSES
