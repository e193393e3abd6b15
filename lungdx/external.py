"""A trained model on a dataset it was not trained on: the `external` stage and `lungdx external`.

For each source (any form dataset.source takes but `synthetic`: a local folder or .zip, an
http(s) URL of a .zip, or kaggle:<owner>/<dataset>), brought in by lungdx.sources, with the
download stage's checks (lungdx.source_checks), into a temporary folder and read from there:

    metrics/external/<name>.json    headline numbers, beside the test split's in dvc metrics:
                                    n_images, accuracy, accuracy_ci, f1_macro and f1_macro_ci (two
                                    classes or more), ece; with lung masks: lung_energy_share,
                                    lung_energy_share_ci, lung_energy_chance; with lesion masks:
                                    pointing_game, pointing_chance
    reports/external/<name>.json    the details: the source, which classes were scored, per class
                                    sensitivity with its interval, the confusion matrix, the
                                    Grad-CAM scores per class, and every file not scored, with why

Only the classes the model knows are scored; images of another class are listed, not scored
(a model of COVID and Normal says nothing about Lung_Opacity). A prediction of a class the
dataset lacks counts as wrong. The Grad-CAM scores use each image's true-class heatmap, as the
gradcam stage does, and the images are prepared exactly as the model's training images were
(its file says how, lung focus included: a crop/mask model needs every image's lung mask).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import write_json
from .errors import LungdxError
from .images import WHOLE, UnreadableImage, check_lung_masks, native_mask, prepare_image, read_gray, resize_square
from .metrics import bounds, r6
from .model_file import read_info
from .raw import class_images, deduplicate, inspect_all
from .sources import bring_in_dataset
from .stats import (
    LEVEL,
    RESAMPLES,
    bootstrap_interval,
    confusion,
    expected_calibration_error,
    f1_macro,
    split_intervals,
)

if TYPE_CHECKING:
    from .params import ExternalSettings
    from .workers import Progress

log = logging.getLogger(__name__)


@dataclass
class DrawnLungs:
    """What the model's own segmenter did on a dataset: each image's Dice against its true mask
    (where it has one, at the image's own size), and the images whose drawn lungs were implausible
    (used whole)."""

    dice: np.ndarray
    whole: list[str]


def inventory(raw_dir: Path, classes: list[str], progress: Progress | None = None) -> tuple[list[dict], list[dict]]:
    """(rows to score: path, label, mask, lesion; files not scored: path, reason) of a raw layout.
    Every image is decoded once (as sample does), exact duplicates are kept once."""
    folders = sorted(p.name for p in raw_dir.iterdir() if p.is_dir())
    rels, skipped = [], []
    for cls in folders:
        if cls not in classes:
            skipped += [
                {"path": rel, "reason": f"class {cls!r}, which the model does not know"}
                for rel in class_images(raw_dir, cls)
            ]
            continue
        rels += class_images(raw_dir, cls)
    kept, left_out = deduplicate(inspect_all(raw_dir, rels, progress))
    skipped += [{"path": path, "reason": reason} for path, reason in left_out]
    rows = [
        {
            "path": item.path,
            "label": classes.index(item.path.split("/", 1)[0]),
            "mask": item.masks.get("masks", ""),
            "lesion": item.masks.get("lesions", ""),
        }
        for item in kept
    ]
    return rows, skipped


def load_rows(
    raw_dir: Path, rows: list[dict], info: dict, segmenter: Any = None
) -> tuple[dict[str, np.ndarray], DrawnLungs | None]:
    """(images, and masks / lesions where every row has one, else the key is absent; what the
    segmenter drew, or None), prepared as the model's training images were. With `segmenter` (the
    model's own, for lung focus crop or mask) each image is cut to the lungs it draws, as
    deployment would; the dataset's true masks, cut the same way, then only score the drawing."""
    size, lung_mask = info["image_size"], info["input"]["lung_mask"]
    if segmenter is None:
        check_lung_masks(
            [r["path"] for r in rows if not r["mask"]],
            len(rows),
            lung_mask,
            "the model's lung focus (as it was trained)",
        )
    has = _complete_masks(rows)
    drawing = segmenter is not None and lung_mask != "none"
    true_lungs = has["masks"]  # else, when drawing, the drawn lungs are the lungs scored
    has["masks"] = has["masks"] or drawing
    arrays = {
        name: np.zeros((len(rows), size, size), np.uint8)
        for name in ("images", "masks", "lesions")
        if name == "images" or has[name]
    }
    dice, whole = [], []
    for i, r in enumerate(rows):
        try:
            prepared, dice_i, problem = _load_row(
                raw_dir, r, size, lung_mask, segmenter if drawing else None, true_lungs
            )
        except UnreadableImage as exc:
            raise LungdxError(f"{r['path']}: {exc}") from exc
        if dice_i is not None:
            dice.append(dice_i)
        if problem:
            whole.append(r["path"])
        for name, array in zip(("images", "masks", "lesions"), prepared, strict=True):
            if name in arrays:
                arrays[name][i] = array
    return arrays, DrawnLungs(np.array(dice), whole) if drawing else None


def _complete_masks(rows: list[dict]) -> dict[str, bool]:
    """{masks, lesions}: whether every row has one; a warning where only some have."""
    has = {name: all(r[key] for r in rows) for name, key in (("masks", "mask"), ("lesions", "lesion"))}
    for name, key, what in (("masks", "mask", "lung"), ("lesions", "lesion", "lesion")):
        if not has[name] and any(r[key] for r in rows):
            log.warning(
                f"only some images have {what} masks: the Grad-CAM {what} scores need every image's, "
                "so they are left out"
            )
    return has


def _load_row(
    raw_dir: Path, row: dict, size: int, lung_mask: str, segmenter: Any, true_lungs: bool
) -> tuple[tuple[np.ndarray, np.ndarray | None, np.ndarray | None], float | None, str]:
    """((image, lung mask, lesion mask) of one row as the model takes it, the segmenter's Dice or
    None, why its drawing is implausible or ""); with `segmenter`, cut to the lungs it draws."""
    lungs = drawn = None
    dice, problem = None, ""
    if segmenter is not None:
        drawn, dice, problem = _drawn_lungs(
            segmenter, raw_dir / row["path"], raw_dir / row["mask"] if row["mask"] else None
        )
        lungs = WHOLE if problem else drawn
    image, mask, lesion = prepare_image(
        raw_dir / row["path"],
        size,
        lung_mask,
        raw_dir / row["mask"] if true_lungs else None,
        raw_dir / row["lesion"] if row["lesion"] else None,
        lungs=lungs,
    )
    if mask is None and drawn is not None:  # used whole: its drawing is what is scored
        mask = resize_square(drawn, size, is_mask=True)
    return (image, mask, lesion), dice, problem


def _drawn_lungs(segmenter, image_path: Path, true_mask: Path | None):
    """(the lungs the segmenter draws on an image, its Dice against the true mask or None, why the
    drawing is implausible or "")."""
    from .lungs import find_lungs, overlap

    image = read_gray(image_path)
    drawn, problem = find_lungs(segmenter, image)
    dice = None if true_mask is None else overlap(drawn, native_mask(true_mask, image.shape))[0]
    return drawn, dice, problem


def external_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], seed: int) -> dict:
    """Accuracy, macro F1 over the classes present (two or more), ECE, per class sensitivity; with
    percentile bootstrap intervals over the images, seeded."""
    y_pred, k = probs.argmax(1), len(classes)
    present = sorted(set(y_true.tolist()))
    ci = split_intervals(y_true, y_pred, k, RESAMPLES, seed=seed)
    out: dict[str, Any] = {
        "n_images": int(len(y_true)),
        "accuracy": r6(ci["accuracy"][0]),
        "accuracy_ci": bounds(*ci["accuracy"][1:]),
    }
    if len(present) >= 2:
        f1 = partial(f1_macro, k=k, labels=present)
        out["f1_macro"] = r6(f1(y_true, y_pred))
        out["f1_macro_ci"] = bounds(*bootstrap_interval(f1, y_true, y_pred, seed=seed))
    out["ece"] = r6(expected_calibration_error(y_true, probs))
    value, low, high = ci["sensitivity"]
    out["per_class"] = {
        classes[i]: {
            "n": int((y_true == i).sum()),
            "sensitivity": r6(value[i]),
            "sensitivity_ci": bounds(low[i], high[i]),
        }
        for i in present
    }
    out["confusion_matrix"] = confusion(y_true, y_pred, k).tolist()
    return out


HEADLINE = (
    "n_images",
    "accuracy",
    "accuracy_ci",
    "f1_macro",
    "f1_macro_ci",
    "ece",
    "segmenter_dice",
    "lung_energy_share",
    "lung_energy_share_ci",
    "lung_energy_chance",
    "pointing_game",
    "pointing_chance",
)


def evaluate_external(
    model_path: str | Path,
    source: str,
    *,
    metrics_path: str | Path | None,
    details_path: str | Path | None,
    seed: int,
    layer: str | None,
    what: str = "the external source",
    project_root: str | Path | None = None,
    progress: Progress | None = None,
) -> dict:
    """Score the model at model_path on `source`; write the headline to metrics_path and the
    details to details_path (None: not written); return the details. `seed` draws the bootstrap
    resamples, `layer` is the Grad-CAM layer (None: the default one); `what` names the source in
    messages."""
    from .metrics import headline

    info = read_info(model_path)  # a wrong model path fails before the source is read
    classes = info["classes"]
    with tempfile.TemporaryDirectory(prefix="lungdx-external-") as tmp:
        raw_dir = Path(tmp) / "raw"
        found, rows, skipped = _bring_in(raw_dir, source, classes, what, project_root, progress)
        arrays, drawn = load_rows(raw_dir, rows, info, _own_segmenter(model_path, info))
    y_true = np.array([r["label"] for r in rows])
    scored, heatmaps = _model_scores(model_path, source, arrays["images"], y_true, classes, layer, seed)
    masks = {name: arrays[name] for name in ("masks", "lesions") if name in arrays}
    details = {
        **scored,
        "classes_found": found,
        **(_segmenter_details(drawn, rows, seed) if drawn is not None else {}),
        **(_gradcam_details(heatmaps, y_true, classes, masks, seed) if masks else {}),
        "skipped": skipped,
        "intervals": _interval_settings(seed),
    }
    if details_path is not None:
        write_json(details_path, details)
    if metrics_path is not None:
        write_json(metrics_path, headline(details, HEADLINE))
    return details


def _interval_settings(seed: int) -> dict:
    """How the details' intervals were drawn."""
    return {"method": "percentile bootstrap", "over": "images", "resamples": RESAMPLES, "seed": seed, "level": LEVEL}


def _bring_in(
    raw_dir: Path,
    source: str,
    classes: list[str],
    what: str,
    project_root: str | Path | None,
    progress: Progress | None,
) -> tuple[list[str], list[dict], list[dict]]:
    """(the source's classes, the rows to score, the files not scored) of `source`, brought into
    raw_dir; a LungdxError when it has nothing the model can score."""
    found = bring_in_dataset(source, raw_dir, what, project_root, reader="the external check")
    if not set(found) & set(classes):
        raise LungdxError(
            f"external source {source}: its classes {found} share none with the model's {classes}; nothing to score"
        )
    rows, skipped = inventory(raw_dir, classes, progress)
    for item in skipped:
        log.warning(f"external {source}: not scored {item['path']}: {item['reason']}")
    if not rows:
        raise LungdxError(
            f"external source {source}: no readable image of the model's classes "
            f"({len(skipped)} file(s) skipped, each named above)"
        )
    return found, rows, skipped


def _own_segmenter(model_path: str | Path, info: dict) -> Any:
    """The segmenter the model file carries, for a model with lung focus; else None."""
    if info["input"]["lung_mask"] == "none" or info["segmenter"] is None:
        return None
    from .model_file import load_segmenter

    return load_segmenter(model_path, info)


def _model_scores(
    model_path: str | Path,
    source: str,
    images: np.ndarray,
    y_true: np.ndarray,
    classes: list[str],
    layer: str | None,
    seed: int,
) -> tuple[dict, np.ndarray]:
    """(the model's scores on the images, with what was scored, and its true-class heatmaps)."""
    from .arrays import finite_outputs
    from .heatmaps import GradCam
    from .model_file import load_model

    model, info = load_model(model_path)
    cam = GradCam(model, layer, tta=info["tta"])
    probs, heatmaps = cam.explain(images, y_true, desc="external")
    finite_outputs(probs, model_path)
    scored = {
        **external_metrics(y_true, probs, classes, seed),
        "source": source,
        "model": info["architecture"],
        "lung_mask": info["input"]["lung_mask"],
        "layer": cam.layer,
        "classes_scored": [classes[i] for i in sorted(set(y_true.tolist()))],
    }
    return scored, heatmaps


def _segmenter_details(drawn: DrawnLungs, rows: list[dict], seed: int) -> dict:
    """The details of the lungs the model's segmenter drew, and which lungs the Grad-CAM scores used."""
    segmenter = segmenter_scores(drawn, len(rows), any(r["mask"] for r in rows), seed)
    return {
        "segmenter": segmenter,
        "lungs_scored": "the dataset's masks"
        if all(r["mask"] for r in rows)
        else "the lungs the model's segmenter drew",
        "segmenter_dice": segmenter.get("dice"),
    }


def _gradcam_details(heatmaps: np.ndarray, y_true: np.ndarray, classes: list[str], masks: dict, seed: int) -> dict:
    """The Grad-CAM scores against the lung and lesion masks, and their headline numbers."""
    from .heatmaps import headline_scores, mask_scores

    scores = mask_scores(heatmaps, y_true, classes, masks, seed=seed)
    return {"gradcam": scores, **headline_scores(scores)}


def segmenter_scores(drawn: DrawnLungs, n: int, has_masks: bool, seed: int) -> dict:
    """How the model's own segmenter did on the dataset: Dice against its true masks (where it has
    them), with a bootstrap interval, and the images whose drawn lungs were implausible."""
    from .stats import mean_interval

    out: dict[str, Any] = {"images_implausible": len(drawn.whole), "implausible": drawn.whole[:50]}
    if has_masks and len(drawn.dice):
        dice = drawn.dice
        out = {"dice": r6(dice.mean()), "dice_ci": bounds(*mean_interval(dice, seed=seed)), "n": int(len(dice)), **out}
    if out["images_implausible"]:
        log.warning(
            f"the model's segmenter drew implausible lungs on {out['images_implausible']} of {n} images "
            f"(e.g. {drawn.whole[0]})"
        )
    return out


def external(
    settings: ExternalSettings,
    name: str,
    model_path: str | Path,
    metrics_path: str | Path,
    details_path: str | Path,
    progress: Progress | None = None,
) -> dict:
    """The external@<name> stage: the model at model_path scored on the dataset external.<name>
    names; returns the details."""
    return evaluate_external(
        model_path,
        settings.source(name),
        metrics_path=metrics_path,
        details_path=details_path,
        seed=settings.seed,
        layer=settings.layer,
        what=f"{settings.key('sources')}.{name}",
        progress=progress,
    )
