"""The `gradcam` stage: an HTML report of where the model looks, and how often it looks right.

    reports/gradcam/index.html     opens from disk, no server: model, key metrics, confusion
                                   matrix, then per class test images, correct and misclassified,
                                   original beside the Grad-CAM overlay of the predicted class
    reports/gradcam/img/*.png
    reports/gradcam/scores.json    the quantitative check in full: model, layer, and where masks
                                   exist, on every test image, for its true class:
                                   lung masks   -> share of Grad-CAM energy inside the lungs
                                   lesion masks -> pointing game hit rate and energy inside the
                                                   lesion, each beside its chance level, per class
    metrics/gradcam.json           the headline numbers only (overall, with their chance levels):
                                   lung_energy_share, lung_energy_chance, pointing_game,
                                   pointing_chance; absent where the data has no such masks
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import cv2
import numpy as np

from . import params as P
from .atomic import atomic_dir, write_json
from .datasets import load_split, predict
from .gradcam import GradCam, dilate, energy_inside, overlay, pointing_hits, tolerance
from .images import write_png
from .model_file import load_model
from .sample import load_manifest

DISPLAY = 256  # pixels per side in the report, whatever the model's input size


def mask_scores(heatmaps: np.ndarray, y_true: np.ndarray, classes: list[str], masks: dict) -> dict:
    """The quantitative check, per class and overall, for whichever masks the data has."""
    def r4(x):
        return None if x is None or np.isnan(x) else round(float(x), 4)

    out = {}
    if "masks" in masks:
        share = energy_inside(heatmaps, masks["masks"])
        out["lung_energy_share"] = {
            "overall": r4(np.nanmean(share)),
            "chance": r4((masks["masks"] > 0).mean()),
            "per_class": {c: r4(np.nanmean(share[y_true == i])) for i, c in enumerate(classes)
                          if (y_true == i).any()},
        }
    if "lesions" in masks:
        lesion = np.asarray(masks["lesions"])
        has = lesion.reshape(len(lesion), -1).any(1)
        tol = tolerance(lesion.shape[1])
        near = dilate(lesion, tol)
        hits, share = pointing_hits(heatmaps, near), energy_inside(heatmaps, lesion)
        # Chance of each: a peak dropped uniformly at random; energy spread evenly.
        hit_chance = (near > 0).reshape(len(near), -1).mean(1)
        area = (lesion > 0).reshape(len(lesion), -1).mean(1)
        per_class = {}
        for i, c in enumerate(classes):
            sel = (y_true == i) & has
            if sel.any():
                per_class[c] = {"n": int(sel.sum()), "pointing_game": r4(hits[sel].mean()),
                                "pointing_chance": r4(hit_chance[sel].mean()),
                                "energy_in_lesion": r4(np.nanmean(share[sel])), "energy_chance": r4(area[sel].mean())}
        out["lesions"] = {"pointing_tolerance_px": tol,
                          "overall": {"n": int(has.sum()), "pointing_game": r4(hits[has].mean()),
                                      "pointing_chance": r4(hit_chance[has].mean()),
                                      "energy_in_lesion": r4(np.nanmean(share[has])),
                                      "energy_chance": r4(area[has].mean())} if has.any() else None,
                          "per_class": per_class}
    return out


def headline_scores(scores: dict) -> dict:
    """The numbers of metrics/gradcam.json: overall figures beside their chance levels."""
    out = {}
    if "lung_energy_share" in scores:
        out["lung_energy_share"] = scores["lung_energy_share"]["overall"]
        out["lung_energy_chance"] = scores["lung_energy_share"]["chance"]
    overall = scores.get("lesions", {}).get("overall")
    if overall:
        out["pointing_game"] = overall["pointing_game"]
        out["pointing_chance"] = overall["pointing_chance"]
    return {k: v for k, v in out.items() if isinstance(v, (int, float))}


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


def _table(matrix, classes) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{html.escape(c)}</th>" + "".join(
            f'<td class="{"diag" if i == j else ""}">{v}</td>' for j, v in enumerate(row)) + "</tr>"
        for i, (c, row) in enumerate(zip(classes, matrix)))
    return f'<table class="cm"><tr><th>actual \\ predicted</th>{head}</tr>{rows}</table>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grad-CAM report: {model}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.metrics span {{ display: inline-block; margin-right: 2em; font-size: 1.1em; }}
table.cm {{ border-collapse: collapse; margin: 1em 0; }}
table.cm td, table.cm th {{ border: 1px solid #bbb; padding: 4px 10px; text-align: center; }}
table.cm td.diag {{ background: #e6f2e6; font-weight: bold; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 14px; }}
figure {{ margin: 0; padding: 6px; border: 2px solid #8c8; border-radius: 6px; }}
figure.wrong {{ border-color: #d66; }}
figure img {{ width: {display}px; height: {display}px; image-rendering: auto; }}
figcaption {{ font-size: 0.85em; max-width: {pair}px; }}
.missing {{ outline: 3px dashed red; }}
#broken {{ color: #c00; font-weight: bold; }}
</style></head>
<body data-images-total="{n_images}">
<h1>Grad-CAM report: {model}</h1>
<p class="metrics"><span>test accuracy <b>{accuracy}</b></span><span>F1 macro <b>{f1_macro}</b></span>
<span>ROC AUC (one-vs-rest) <b>{roc_auc}</b></span><span>{n_test} test images</span>
<span>Grad-CAM layer <code>{layer}</code></span></p>
<p id="broken"></p>
<h2>Confusion matrix</h2>
{confusion}
{scores}
<p>Each pair: the X-ray as the model sees it, then the Grad-CAM heatmap of the <em>predicted</em>
class over it (inferno colormap: dark = no evidence, yellow = strongest). Green frame: correct;
red frame: misclassified.</p>
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


def _scores_html(scores: dict) -> str:
    if not scores:
        return "<p>No masks in this data: no quantitative check.</p>"
    parts = ["<h2>Where the model looks (all test images, true class)</h2><ul>"]
    if "lung_energy_share" in scores:
        s = scores["lung_energy_share"]
        parts.append(f"<li>Share of Grad-CAM energy inside the lungs: <b>{s['overall']}</b> "
                     f"(lungs cover {s['chance']} of the image)</li>")
    if scores.get("lesions", {}).get("overall"):
        s = scores["lesions"]["overall"]
        parts.append(f"<li>Pointing game (heatmap peak within {scores['lesions']['pointing_tolerance_px']} px "
                     f"of the lesion): <b>{s['pointing_game']}</b> (chance {s['pointing_chance']}); share of "
                     f"energy inside the lesion: <b>{s['energy_in_lesion']}</b> (chance {s['energy_chance']})</li>")
    return "".join(parts) + "</ul>"


def build_report(params: dict, model_path="models/model.keras", prepared_dir="data/prepared",
                 manifest_path="data/sampled/manifest.csv", eval_path="reports/eval.json",
                 out_dir="reports/gradcam", metrics_path="metrics/gradcam.json") -> dict:
    """The gradcam stage; returns the full scores (reports/gradcam/scores.json)."""
    cfg = P.gradcam_settings(params)
    model, info = load_model(model_path)
    classes = info["classes"]
    images, y_true = load_split(prepared_dir, "test")
    masks = {name: np.load(Path(prepared_dir) / "test" / f"{name}.npy", mmap_mode="r")
             for name in ("masks", "lesions") if (Path(prepared_dir) / "test" / f"{name}.npy").is_file()}
    probs = predict(model, images, source=model_path)
    y_pred = probs.argmax(1)
    cam = GradCam(model, cfg["layer"])
    size = images.shape[1]

    scores = mask_scores(cam.batched(images, y_true, size), y_true, classes, masks) if masks else {}
    scores = {"model": info["architecture"], "layer": cam.layer, **scores}

    evaluation = json.loads(Path(eval_path).read_text())
    paths = load_manifest(manifest_path).query("split == 'test'")["path"].tolist()
    chosen = pick_examples(y_true, y_pred, len(classes), cfg["per_class"])
    heat = cam.batched(images[chosen], y_pred[chosen], size) if chosen else np.zeros((0, size, size))
    with atomic_dir(out_dir) as tmp:
        (tmp / "img").mkdir()
        sections = []
        for c, cls in enumerate(classes):
            figs = []
            for k, i in enumerate(chosen):
                if y_true[i] != c:
                    continue
                gray = cv2.resize(np.asarray(images[i]), (DISPLAY, DISPLAY), interpolation=cv2.INTER_LINEAR)
                write_png(tmp / "img" / f"{i}.png", gray)
                write_png(tmp / "img" / f"{i}_cam.png", overlay(gray, heat[k]))
                wrong = y_pred[i] != y_true[i]
                figs.append(
                    f'<figure class="{"wrong" if wrong else "right"}"><img src="img/{i}.png" alt="X-ray {i}">'
                    f'<img src="img/{i}_cam.png" alt="Grad-CAM {i}"><figcaption>{html.escape(paths[i])}<br>'
                    f"true <b>{html.escape(cls)}</b>, predicted <b>{html.escape(classes[y_pred[i]])}</b> "
                    f"(p = {probs[i, y_pred[i]]:.3f})</figcaption></figure>")
            sections.append(f"<h2>{html.escape(cls)}</h2><div class=\"grid\">{''.join(figs)}</div>")
        page = PAGE.format(model=html.escape(info["architecture"]), accuracy=evaluation["accuracy"],
                           f1_macro=evaluation["f1_macro"], roc_auc=evaluation["roc_auc_ovr"],
                           n_test=evaluation["n_test"], layer=html.escape(cam.layer), display=DISPLAY,
                           pair=2 * DISPLAY + 4, confusion=_table(evaluation["confusion_matrix"], classes),
                           scores=_scores_html(scores), sections="".join(sections), n_images=2 * len(chosen))
        (tmp / "index.html").write_text(page, encoding="utf-8")
        write_json(tmp / "scores.json", scores)
    write_json(metrics_path, headline_scores(scores))
    return scores
