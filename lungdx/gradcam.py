"""The `gradcam` stage: an HTML report of where the model looks, and how often it looks right.

reports/gradcam/index.html     opens from disk, no server: model, test accuracy and F1 macro (with
                               their 95% bootstrap intervals), ROC AUC, confusion matrix, the heatmap's
                               colour bar, each class's lung energy share (or, plainly, that no
                               lungs are known and what to do); then a section for every class,
                               saying how many of its test images are correct and misclassified,
                               how many of each are shown and what it has none of, then its test
                               images, correct and misclassified:
                               the X-ray, the Grad-CAM of the predicted class and, for a
                               misclassified one, of its true class, each labelled, the lung-mask
                               outline on the heatmaps where the data has lung masks, and every
                               class's probability (the predicted one highlighted)
reports/gradcam/img/*.png
reports/gradcam/scores.json    the quantitative check in full: model, layer, lungs_known with
                               lungs_from (whose lungs) or lungs_note (none known: what to do),
                               classes (per class: n_test, correct, misclassified, shown_correct,
                               shown_misclassified, note), and where masks exist, on every test
                               image, for its true class:
                               lung masks   -> share of Grad-CAM energy inside the lungs, with its
                                               95% bootstrap interval over test images, overall
                                               and per class, each beside the lungs' area
                               lesion masks -> pointing game hit rate and energy inside the
                                               lesion, each beside its chance level, per class
reports/gradcam_images/<class>_<k>.png
                               image plots for `dvc plots show/diff` and the VS Code extension,
                               so experiments compare side by side: slot k of a class is its k-th
                               test image (k = 1..3, split order), the same X-ray in every
                               experiment on the same data; beside it the Grad-CAM of its true
                               class, and a line saying what the model predicted; <class> is the
                               class name's letters and digits, "_" for the rest (plot_stems)
metrics/gradcam.json           the headline numbers only (overall, with their chance levels):
                               lung_energy_share, lung_energy_share_ci, lung_energy_chance,
                               pointing_game, pointing_chance; absent where the data has no such masks
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import readable
from .arrays import finite_outputs, load_masks, scored_test_split
from .atomic import atomic_dir, write_json
from .heatmaps import OUTLINE_BGR, GradCam, colorbar, draw_outline, headline_scores, mask_scores, overlay
from .images import write_png
from .model_file import load_model
from .opencv import cv2
from .splits import load_manifest

if TYPE_CHECKING:
    import keras

    from .params import GradcamSettings

DISPLAY = 256  # pixels per side in the report, whatever the model's input size
PLOT_SLOTS = 3  # image plots per class


def pick_examples(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, per_class: int) -> list[int]:
    """Per true class: misclassified images first (up to half), then correct ones, in split order."""
    chosen = []
    for c in range(n_classes):
        idx = np.flatnonzero(y_true == c)
        wrong, right = idx[y_pred[idx] != c], idx[y_pred[idx] == c]
        take_wrong = min(len(wrong), max(1, per_class // 2))
        take_right = min(len(right), per_class - take_wrong)
        take_wrong = min(len(wrong), per_class - take_right)  # few correct ones: show more errors
        chosen += list(wrong[:take_wrong]) + list(right[:take_right])
    return [int(i) for i in chosen]


def class_examples(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], chosen: list[int]) -> dict[str, dict]:
    """Per class (every one, in order): its test images, correct and misclassified, how many of each
    the report shows, and a note saying so where it has none of one kind to show."""
    out = {}
    for c, cls in enumerate(classes):
        n, right = int((y_true == c).sum()), int(((y_true == c) & (y_pred == c)).sum())
        shown_wrong = sum(1 for i in chosen if y_true[i] == c and y_pred[i] != c)
        out[cls] = {
            "n_test": n,
            "correct": right,
            "misclassified": n - right,
            "shown_correct": sum(1 for i in chosen if y_true[i] == c) - shown_wrong,
            "shown_misclassified": shown_wrong,
            "note": _examples_note(n, right),
        }
    return out


def _examples_note(n: int, right: int) -> str:
    """What a class's section lacks, in words ("" when it has both correct and misclassified images)."""
    if n == 0:
        return "no test image of this class: nothing to show"
    if right == n:
        return f"no misclassified test image of this class: all {n} are correct, so only correct ones are shown"
    if right == 0:
        return (
            f"no correctly classified test image of this class: all {n} are misclassified, "
            "so only misclassified ones are shown"
        )
    return ""


def _slug(name: str) -> str:
    """A class name's letters (any script, with their accents) and digits, each other run "_"."""
    kept = "".join(
        c if c.isalnum() or unicodedata.category(c).startswith("M") else "_" for c in unicodedata.normalize("NFC", name)
    )
    return re.sub("_+", "_", kept)[:60].strip("_")  # 60 characters: a file name has 255 bytes at most


def plot_stems(classes: list[str]) -> list[str]:
    """Each class's image-plot name before `_<k>.png`: "Viral Pneumonia" -> "Viral_Pneumonia".
    Classes whose names give the same stem (ignoring case, for case-insensitive file systems), or
    none, get "-<class index>" after it, a character no plain stem has; so every stem differs from
    every other, and since k holds no "_", so does every `<stem>_<k>.png`. The same class list
    gives the same names."""
    slugs = [_slug(c) for c in classes]
    counts = Counter(s.casefold() for s in slugs)
    return [s if s and counts[s.casefold()] == 1 else f"{s or 'class'}-{i}" for i, s in enumerate(slugs)]


def plot_slots(y_true: np.ndarray, n_classes: int, per_class: int = PLOT_SLOTS) -> list[tuple[int, int, int]]:
    """(class, k from 1, image index): each class's first test images in split order, so a slot
    holds the same X-ray in every experiment on the same data."""
    return [(c, k + 1, int(i)) for c in range(n_classes) for k, i in enumerate(np.flatnonzero(y_true == c)[:per_class])]


def _probabilities(p: np.ndarray, classes: list[str], predicted: int) -> str:
    rows = "".join(
        f'<tr class="{"predicted" if j == predicted else ""}"><td>{html.escape(c)}</td>'
        f'<td><span class="bar" style="width:{80 * v:.1f}px"></span></td><td class="p">{readable.score(v)}</td></tr>'
        for j, (c, v) in enumerate(zip(classes, p, strict=True))
    )
    return f'<table class="probs">{rows}</table>'


def _panels(i: int, true: int, predicted: int, classes: list[str]) -> list[tuple[str, str, str]]:
    """One test image's pictures, as (src, caption, the class it names, in bold after it)."""
    xray = (f"img/{i}.png", "X-ray", "")
    if predicted == true:
        return [xray, (f"img/{i}_cam.png", "Grad-CAM of the predicted (and true) class, ", classes[true])]
    return [
        xray,
        (f"img/{i}_cam.png", "Grad-CAM of the predicted class, ", classes[predicted]),
        (f"img/{i}_true.png", "Grad-CAM of the true class, ", classes[true]),
    ]


def _panel(src: str, caption: str, cls: str) -> str:
    label = html.escape(caption) + (f"<b>{html.escape(cls)}</b>" if cls else "")
    return (
        f'<div class="panel"><div class="label">{label}</div>'
        f'<img src="{html.escape(src)}" alt="{html.escape(caption + cls)}"></div>'
    )


def _figure(i: int, path: str, true: int, classes: list[str], p: np.ndarray) -> str:
    """One test image: its pictures, then its path and every class's probability."""
    predicted = int(p.argmax())
    pictures = "".join(_panel(*panel) for panel in _panels(i, true, predicted, classes))
    return (
        f'<figure class="{"wrong" if predicted != true else "right"}" data-image="{i}">'
        f'<div class="panels">{pictures}</div><figcaption>{html.escape(path)}<br>'
        f"true <b>{html.escape(classes[true])}</b>, predicted <b>{html.escape(classes[predicted])}</b>"
        f"{_probabilities(p, classes, predicted)}</figcaption></figure>"
    )


def _plot_picture(gray: np.ndarray, heat: np.ndarray, lung: np.ndarray | None, text: str) -> np.ndarray:
    """The X-ray beside its true-class overlay, over two lines of text with the colour bar: an
    image plot is shown with no caption."""
    cam = overlay(gray, heat)
    if lung is not None:
        cam = draw_outline(cam, lung)
    pair = np.hstack([cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), np.full((DISPLAY, 4, 3), 255, np.uint8), cam])
    band = np.full((44, pair.shape[1], 3), 255, np.uint8)

    def write(words: str, x: int, y: int) -> None:
        cv2.putText(band, words, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)

    write(text, 4, 16)
    write("heat 0", 4, 37)
    band[28:38, 56:216] = colorbar(160, 10)
    write("1 (strongest)" + ("; cyan: lung outline" if lung is not None else ""), 222, 37)
    return np.vstack([pair, band])


def _table(matrix: list[list[int]], classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{html.escape(c)}</th>"
        + "".join(f'<td class="{"diag" if i == j else ""}">{v}</td>' for j, v in enumerate(row))
        + "</tr>"
        for i, (c, row) in enumerate(zip(classes, matrix, strict=True))
    )
    return f'<table class="cm"><tr><th>actual \\ predicted</th>{head}</tr>{rows}</table>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grad-CAM report: {model}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 2em 2em; color: #222; }}
.metrics span {{ display: inline-block; margin-right: 2em; font-size: 1.1em; }}
table.cm {{ border-collapse: collapse; margin: 1em 0; }}
table.cm td, table.cm th {{ border: 1px solid #bbb; padding: 4px 10px; text-align: center; }}
table.cm td.diag {{ background: #e6f2e6; font-weight: bold; }}
.key {{ position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid #ccc;
        padding: 8px 0; display: flex; flex-wrap: wrap; align-items: center; gap: 6px 28px; font-size: 0.9em; }}
.colorbar {{ display: inline-flex; align-items: center; gap: 8px; }}
.colorbar img {{ width: {display}px; height: 14px; border: 1px solid #888; }}
.swatch {{ display: inline-block; width: 28px; height: 3px; background: {outline}; vertical-align: middle;
           outline: 1px solid #555; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }}
figure {{ margin: 0; padding: 6px; border: 3px solid #4a4; border-radius: 6px; }}
figure.wrong {{ border-color: #d33; }}
.panels {{ display: flex; gap: 4px; }}
.panel .label {{ font-size: 0.8em; height: 2.6em; max-width: {display}px; }}
.panel img {{ display: block; width: {display}px; height: {display}px; }}
figcaption {{ width: 0; min-width: 100%; padding-top: 4px; font-size: 0.85em; overflow-wrap: anywhere; }}
table.probs {{ border-collapse: collapse; margin-top: 3px; }}
table.probs td {{ padding: 0 6px 0 0; }}
table.probs td:nth-child(2) {{ width: 80px; }}
table.probs td.p {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.probs .bar {{ display: inline-block; height: 0.7em; background: #999; }}
table.probs tr.predicted {{ font-weight: bold; background: #fff3b0; }}
table.probs tr.predicted .bar {{ background: #333; }}
.missing {{ outline: 3px dashed red; }}
#broken {{ color: #c00; font-weight: bold; }}
.no-lungs, .note {{ color: #a40; }}
p.summary {{ margin-top: 0; }}
</style></head>
<body data-images-total="{n_images}">
<h1>Grad-CAM report: {model}</h1>
<p class="metrics">
<span>test accuracy <b>{accuracy}</b> {accuracy_ci}</span>
<span>F1 macro <b>{f1_macro}</b> {f1_macro_ci}</span>
<span>ROC AUC (one-vs-rest) <b>{roc_auc}</b></span>
<span>{n_test} test images</span>
<span>Grad-CAM layer <code>{layer}</code></span>
</p>
<p id="broken"></p>
<h2>Confusion matrix</h2>
{confusion}
{scores}
<h2>Test images</h2>
<p>Each figure: the X-ray as the model sees it, then the Grad-CAM heatmap of the <em>predicted</em>
class over it and, when the prediction is wrong, the heatmap of the <em>true</em> class. Each heatmap is
scaled to its own strongest point (1). Green frame: correct; red frame: misclassified. Below: every
class's probability, the predicted class highlighted.</p>
<div class="key">
<span class="colorbar">heatmap: <span>0 = no evidence</span><img src="img/colorbar.png"
 alt="colour bar: the inferno colormap from 0, no evidence, to 1, strongest evidence"><span>1 = strongest</span></span>
{outline_key}
</div>
{sections}
<script>
// Say so on the page if an image file is missing (and let tests read the count).
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  bad.forEach(i => i.classList.add("missing"));
  document.body.dataset.imagesLoaded = imgs.length - bad.length;
  if (bad.length) document.getElementById("broken").textContent = bad.length + " image(s) failed to load";
}});
</script>
</body></html>
"""


def whose_lungs(origins: dict, lung_mask: str = "none") -> str:
    """Whose lungs the masks are, from prepare's meta.json: lung_masks (how many masks are the
    dataset's, drawn by the segmenter, or drawn but implausible) and lung_mask (under a lung focus
    an image with implausible drawn lungs is used whole; under none every image is)."""
    drawn, whole = origins.get("segmenter", 0), origins.get("whole", 0)
    if not drawn and not whole:
        return "the dataset's lung mask"
    if whole:
        used = "" if lung_mask == "none" else ", those images used whole"
        whole_note = f"; {whole} with implausible drawn lungs, scored all the same{used}"
    return (
        f"the lungs the model's segmenter drew ({drawn} images; {origins.get('dataset', 0)} have the dataset's "
        f"own mask{whole_note if whole else ''})"
    )


def outline_key(origins: dict, lung_mask: str = "none") -> str:
    """The report's key to the lung outline, saying whose lungs they are (whose_lungs)."""
    swatch = '<span class="swatch"></span>'
    whose = html.escape(whose_lungs(origins, lung_mask))
    return f"<span>{swatch} lung outline: the edge of {whose}, drawn on the heatmaps</span>"


def no_lungs_known(settings: GradcamSettings) -> str:
    """scores.json's and the page's words where no test image's lungs are known."""
    keys = settings.KEYS
    return (
        "no lungs known: the test images have no lung masks (the dataset has none, and no segmenter drew "
        "them), so the share of Grad-CAM energy inside the lungs cannot be scored; set "
        f"{keys['train_source']} to a dataset with lung masks (the Kaggle layout's <Class>/masks) and the "
        f"segment stage learns the lungs and draws them, whatever {keys['lung_mask']} is"
    )


def lungs_statement(scores: dict, origins: dict, settings: GradcamSettings, lung_mask: str = "none") -> dict:
    """scores.json's word on the lungs: whose they are where they are known, else plainly that none are."""
    if "lung_energy_share" in scores:
        return {"lungs_known": True, "lungs_from": whose_lungs(origins, lung_mask)}
    return {"lungs_known": False, "lungs_note": no_lungs_known(settings)}


def _lung_origins(prepared_dir: str | Path) -> tuple[dict, str]:
    """prepare's meta.json: how many lung masks are of each origin, and the lung focus."""
    meta = json.loads((Path(prepared_dir) / "meta.json").read_text())
    return meta.get("lung_masks", {}), meta.get("lung_mask", "none")


def _interval(ci: dict | None) -> str:
    """An interval of reports/eval.json or scores.json as the page shows it, with its score's
    decimals (nothing where there is none)."""
    if not ci or not readable.has_interval(ci):
        return ""
    return f"<small>(95% CI {readable.interval(ci['lower'], ci['upper'])}, bootstrap)</small>"


def _scores_html(scores: dict) -> str:
    """The mask scores of scores.json as the page says them, each beside its chance level; where no
    lungs are known, that plainly, and what to do."""
    parts = ["<h2>Where the model looks (all test images, true class)</h2><ul>"]
    if "lung_energy_share" in scores:
        s = scores["lung_energy_share"]
        parts.append(
            f"<li>Share of Grad-CAM energy inside the lungs: <b>{readable.score(s['overall'])}</b> "
            f"{_interval(s.get('overall_ci'))} (lungs cover {readable.score(s['chance'])} of the image), "
            f"over the {s['n']} test images whose lungs are known; per class below</li>"
        )
    else:
        parts.append(f'<li class="no-lungs"><b>{html.escape(_sentence(scores["lungs_note"]))}</b></li>')
    if scores.get("lesions", {}).get("overall"):
        s = scores["lesions"]["overall"]
        parts.append(
            f"<li>Pointing game (heatmap peak within {scores['lesions']['pointing_tolerance_px']} px "
            f"of the lesion): <b>{readable.score(s['pointing_game'])}</b> (chance "
            f"{readable.score(s['pointing_chance'])}); share of energy inside the lesion: "
            f"<b>{readable.score(s['energy_in_lesion'])}</b> (chance {readable.score(s['energy_chance'])})</li>"
        )
    else:
        parts.append("<li>No lesion masks in this data: no pointing game.</li>")
    return "".join(parts) + "</ul>" + _lung_table(scores)


def _lung_table(scores: dict) -> str:
    """Each class's lung energy share beside its chance level, as a table ("" where no lungs are known)."""
    if "lung_energy_share" not in scores:
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(cls)}</th><td>{s['n']}</td><td><b>{readable.score(s['share'])}</b> "
        f"{_interval(s['share_ci'])}</td><td>{readable.score(s['chance'])}</td></tr>"
        if s["n"]
        else f'<tr><th>{html.escape(cls)}</th><td>0</td><td colspan="2">no lungs known</td></tr>'
        for cls, s in scores["lung_energy_share"]["per_class"].items()
    )
    return (
        '<table class="cm lungs"><tr><th>true class</th><th>test images with known lungs</th>'
        "<th>share of Grad-CAM energy inside the lungs</th><th>lungs' share of the image (chance)</th></tr>"
        f"{rows}</table>"
    )


def gradcam(
    settings: GradcamSettings,
    model_path: str | Path,
    prepared_dir: str | Path,
    manifest_path: str | Path,
    eval_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    images_dir: str | Path,
) -> dict:
    """The gradcam stage: the report into out_dir, the image plots into images_dir, the headline
    scores into metrics_path; returns the full scores."""
    model, info = load_model(model_path)
    cam, test, masks = _explain_test_split(model, info, settings.layer, model_path, prepared_dir)
    chosen = pick_examples(test.y_true, test.y_pred, len(test.classes), settings.per_class)
    origins, lung_mask = _lung_origins(prepared_dir)
    scores = _all_scores(info["architecture"], cam.layer, test, masks, chosen, origins, lung_mask, settings)
    # The predicted class's heatmaps of the few misclassified images shown only: a gradient of a
    # second class for every image would cost more.
    wrong = [i for i in chosen if test.y_pred[i] != test.y_true[i]]
    heat_pred = (
        dict(zip(wrong, cam.explain(test.images[wrong], test.y_pred[wrong]).heatmaps, strict=True)) if wrong else {}
    )
    paths = load_manifest(manifest_path).query("split == 'test'")["path"].tolist()
    with atomic_dir(out_dir) as tmp:
        (tmp / "img").mkdir()
        write_png(tmp / "img" / "colorbar.png", colorbar(DISPLAY))
        _write_pictures(tmp / "img", test, chosen, heat_pred)
        outline = outline_key(origins, lung_mask) if scores["lungs_known"] else ""
        sections = _sections(test, chosen, paths, scores)
        evaluation = json.loads(Path(eval_path).read_text())
        page = _page(info["architecture"], cam.layer, test.classes, evaluation, scores, sections, outline)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        write_json(tmp / "scores.json", scores)
    _write_plots(images_dir, test)
    write_json(metrics_path, headline_scores(scores))
    return scores


def _all_scores(
    model: str,
    layer: str,
    test: _Explained,
    masks: dict[str, np.ndarray],
    chosen: list[int],
    origins: dict,
    lung_mask: str,
    settings: GradcamSettings,
) -> dict:
    """scores.json: the model and layer, whose lungs (or that none are known), the mask scores, and
    each class's test images and those shown."""
    scores = mask_scores(test.heat_true, test.y_true, test.classes, masks, seed=settings.seed) if masks else {}
    return {
        "model": model,
        "layer": layer,
        **lungs_statement(scores, origins, settings, lung_mask),
        **scores,
        "classes": class_examples(test.y_true, test.y_pred, test.classes, chosen),
    }


def _explain_test_split(
    model: keras.Model, info: dict, layer: str | None, model_path: str | Path, prepared_dir: str | Path
) -> tuple[GradCam, _Explained, dict[str, np.ndarray]]:
    """The test split explained in one pass: every image's probabilities and its true class's
    heatmap (for the mask scores and the true-class pictures); with the GradCam at `layer`, and the
    split's masks."""
    images, y_true = scored_test_split(model_path, info, prepared_dir)
    masks = load_masks(prepared_dir, "test")
    cam = GradCam(model, layer, tta=info["tta"])  # the probabilities the evaluate stage scores
    probs, heat_true = cam.explain(images, y_true, desc="Grad-CAM test")
    finite_outputs(probs, model_path)
    return cam, _Explained(images, masks.get("masks"), info["classes"], y_true, probs, heat_true), masks


@dataclass(frozen=True)
class _Explained:
    """The test split as the report shows it: the images (at the model's input size), their lung
    masks (None where the data has none), the class names, the true classes, the model's
    probabilities and each image's heatmap of its true class."""

    images: np.ndarray
    lungs: np.ndarray | None
    classes: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    heat_true: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    def display(self, i: int) -> np.ndarray:
        """Image i at the report's size."""
        return cv2.resize(np.asarray(self.images[i]), (DISPLAY, DISPLAY), interpolation=cv2.INTER_LINEAR)

    def heat_picture(self, gray: np.ndarray, heat: np.ndarray, i: int) -> np.ndarray:
        """A heatmap over image i's `gray` picture, with its lung outline where there are masks."""
        picture = overlay(gray, heat)
        return picture if self.lungs is None else draw_outline(picture, self.lungs[i])


def _write_pictures(img_dir: Path, test: _Explained, chosen: list[int], heat_pred: dict[int, np.ndarray]) -> None:
    """The pictures of each chosen image: the X-ray, the heatmap of its predicted class, and for a
    misclassified one (in `heat_pred`, that class's heatmap) the heatmap of its true class."""
    for i in chosen:
        gray = test.display(i)
        write_png(img_dir / f"{i}.png", gray)
        write_png(img_dir / f"{i}_cam.png", test.heat_picture(gray, heat_pred.get(i, test.heat_true[i]), i))
        if i in heat_pred:
            write_png(img_dir / f"{i}_true.png", test.heat_picture(gray, test.heat_true[i], i))


def _sections(test: _Explained, chosen: list[int], paths: list[str], scores: dict) -> str:
    """The report's figures, a section per true class (every class), each saying first how many of
    its test images are correct and misclassified, how many of each are shown, what it lacks, and
    the share of its heatmaps' energy inside the lungs (or that no lungs are known)."""
    sections = []
    for c, cls in enumerate(test.classes):
        figs = [_figure(i, paths[i], c, test.classes, test.probs[i]) for i in chosen if test.y_true[i] == c]
        sections.append(
            f'<h2>{html.escape(cls)}</h2><p class="summary">{_class_summary(scores["classes"][cls])}'
            f"{_class_lungs(scores, cls)}</p>"
            f'<div class="grid">{"".join(figs)}</div>'
        )
    return "".join(sections)


def _class_summary(ex: dict) -> str:
    """One class's test images in words: correct, misclassified, shown; and what it has none of."""
    text = (
        f"{ex['n_test']} test images: {ex['correct']} correct, {ex['misclassified']} misclassified; shown here: "
        f"{ex['shown_misclassified']} misclassified, {ex['shown_correct']} correct."
    )
    return html.escape(text) + (f' <b class="note">{html.escape(_sentence(ex["note"]))}</b>' if ex["note"] else "")


def _sentence(words: str) -> str:
    """Words of scores.json as a sentence on the page: a capital first, a full stop last."""
    return words[:1].upper() + words[1:] + "."


def _class_lungs(scores: dict, cls: str) -> str:
    """One class's lung energy share in words, or that its lungs are not known."""
    if "lung_energy_share" not in scores:
        return "<br>No lungs known: no lung energy share (see above)."
    s = scores["lung_energy_share"]["per_class"][cls]
    if not s["n"]:
        return "<br>No lungs known for this class's test images: no lung energy share."
    return (
        f"<br>Share of its true-class Grad-CAM energy inside the lungs: <b>{readable.score(s['share'])}</b> "
        f"{_interval(s['share_ci'])} (lungs cover {readable.score(s['chance'])} of the image; {s['n']} images)"
    )


def _page(
    model: str, layer: str, classes: list[str], evaluation: dict, scores: dict, sections: str, outline: str
) -> str:
    """index.html: PAGE filled in, each score as readable.score writes it."""
    return PAGE.format(
        model=html.escape(model),
        accuracy=readable.score(evaluation["accuracy"]),
        accuracy_ci=_interval(evaluation.get("accuracy_ci")),
        f1_macro=readable.score(evaluation["f1_macro"]),
        f1_macro_ci=_interval(evaluation.get("f1_macro_ci")),
        roc_auc=readable.score(evaluation["roc_auc_ovr"]),
        n_test=evaluation["n_test"],
        layer=html.escape(layer),
        display=DISPLAY,
        outline="#{:02x}{:02x}{:02x}".format(*OUTLINE_BGR[::-1]),
        outline_key=outline,
        confusion=_table(evaluation["confusion_matrix"], classes),
        scores=_scores_html(scores),
        sections=sections,
        n_images=1 + sections.count("<img "),  # the colour bar, and every figure's pictures
    )


def _write_plots(images_dir: str | Path, test: _Explained) -> None:
    """The image plots: each class's first test images beside their true-class heatmaps, captioned."""
    with atomic_dir(images_dir) as tmp:
        stems = plot_stems(test.classes)
        for c, k, i in plot_slots(test.y_true, len(test.classes)):
            pred = test.y_pred[i]
            text = (
                f"{test.classes[c]} #{k}: true-class Grad-CAM; predicted {test.classes[pred]} "
                f"({readable.score(float(test.probs[i, pred]))})"
            )
            write_png(
                tmp / f"{stems[c]}_{k}.png",
                _plot_picture(test.display(i), test.heat_true[i], None if test.lungs is None else test.lungs[i], text),
            )
