"""A trained model on a dataset it was not trained on: the `external` stage and `lungdx external`.

For each source (any form dataset.source takes but `synthetic`: a local folder or .zip, an
http(s) URL of a .zip, or kaggle:<owner>/<dataset>), brought in through the download stage's
checks into a temporary folder and read from there:

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
from functools import partial
from pathlib import Path

import numpy as np

from .atomic import write_json
from .errors import DiskFull, LungdxError
from .images import UnreadableImage, check_lung_masks, prepare_image
from .metrics import bounds, r6
from .model_file import read_info
from .stats import (LEVEL, RESAMPLES, bootstrap_interval, confusion, expected_calibration_error, f1_macro,
                    split_intervals)

log = logging.getLogger(__name__)


def source_params(source: str, seed: int) -> dict:
    """The params the download stage takes for `source` (kaggle:<owner>/<dataset> for Kaggle)."""
    if not isinstance(source, str) or not source.strip() or source.strip() in ("synthetic", "kaggle"):
        raise LungdxError(f"external source {source!r}: give a local folder or .zip, an http(s) URL of a .zip, or "
                          "kaggle:<owner>/<dataset>")
    source = source.strip()
    if source.startswith("kaggle:"):
        return {"seed": seed, "dataset": {"source": "kaggle", "kaggle_handle": source[len("kaggle:"):],
                                          "kaggle_version": None}}
    return {"seed": seed, "dataset": {"source": source}}


def inventory(raw_dir: Path, classes: list[str], progress=None) -> tuple[list[dict], list[dict]]:
    """(rows to score: path, label, mask, lesion; files not scored: path, reason) of a raw layout.
    Every image is decoded once (as sample does), exact duplicates are kept once."""
    from .sample import inspect_all

    folders = sorted(p.name for p in raw_dir.iterdir() if p.is_dir())
    rels, skipped = [], []
    for cls in folders:
        files = sorted(p for p in (raw_dir / cls / "images").glob("*") if p.is_file())
        if cls not in classes:
            skipped += [{"path": f.relative_to(raw_dir).as_posix(), "reason": f"class {cls!r}, which the model "
                         "does not know"} for f in files]
            continue
        rels += [f.relative_to(raw_dir).as_posix() for f in files]
    rows, seen = [], {}
    for rel, digest, problem, _, masks in inspect_all(raw_dir, rels, progress):
        if digest is None:
            skipped.append({"path": rel, "reason": problem})
        elif digest in seen:
            skipped.append({"path": rel, "reason": f"exact duplicate of {seen[digest]}"})
        else:
            seen[digest] = rel
            skipped += [{"path": p.split(": ", 1)[0], "reason": "unusable mask: " + p.split(": ", 1)[1]}
                        for p in problem]
            rows.append({"path": rel, "label": classes.index(rel.split("/", 1)[0]),
                         "mask": masks.get("masks", ""), "lesion": masks.get("lesions", "")})
    return rows, skipped


def load_rows(raw_dir: Path, rows: list[dict], info: dict) -> dict[str, np.ndarray]:
    """images, and masks / lesions where every row has one (else the key is absent), prepared as
    the model's training images were."""
    size, lung_mask = info["image_size"], info["input"]["lung_mask"]
    check_lung_masks([r["path"] for r in rows if not r["mask"]], len(rows), lung_mask,
                     "the model's lung focus (prepare.lung_mask when it was trained)")
    has = {name: all(r[key] for r in rows) for name, key in (("masks", "mask"), ("lesions", "lesion"))}
    for name, key, what in (("masks", "mask", "lung"), ("lesions", "lesion", "lesion")):
        if not has[name] and any(r[key] for r in rows):
            log.warning(f"only some images have {what} masks: the Grad-CAM {what} scores need every image's, "
                        "so they are left out")
    arrays = {name: np.zeros((len(rows), size, size), np.uint8) for name in ("images", "masks", "lesions")
              if name == "images" or has[name]}
    for i, r in enumerate(rows):
        try:
            image, mask, lesion = prepare_image(raw_dir / r["path"], size, lung_mask,
                                                raw_dir / r["mask"] if r["mask"] else None,
                                                raw_dir / r["lesion"] if r["lesion"] else None)
        except UnreadableImage as exc:
            raise LungdxError(f"{r['path']}: {exc}") from None
        for name, array in (("images", image), ("masks", mask), ("lesions", lesion)):
            if name in arrays:
                arrays[name][i] = array
    return arrays


def external_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], seed: int) -> dict:
    """Accuracy, macro F1 over the classes present (two or more), ECE, per class sensitivity; with
    percentile bootstrap intervals over the images, seeded."""
    y_pred, k = probs.argmax(1), len(classes)
    present = sorted(set(y_true.tolist()))
    ci = split_intervals(y_true, y_pred, k, RESAMPLES, seed=seed)
    out = {"n_images": int(len(y_true)), "accuracy": r6(ci["accuracy"][0]), "accuracy_ci": bounds(*ci["accuracy"][1:])}
    if len(present) >= 2:
        f1 = partial(f1_macro, k=k, labels=present)
        out["f1_macro"] = r6(f1(y_true, y_pred))
        out["f1_macro_ci"] = bounds(*bootstrap_interval(f1, y_true, y_pred, seed=seed))
    out["ece"] = r6(expected_calibration_error(y_true, probs))
    value, low, high = ci["sensitivity"]
    out["per_class"] = {classes[i]: {"n": int((y_true == i).sum()), "sensitivity": r6(value[i]),
                                     "sensitivity_ci": bounds(low[i], high[i])} for i in present}
    out["confusion_matrix"] = confusion(y_true, y_pred, k).tolist()
    return out


HEADLINE = ("n_images", "accuracy", "accuracy_ci", "f1_macro", "f1_macro_ci", "ece", "lung_energy_share",
            "lung_energy_share_ci", "lung_energy_chance", "pointing_game", "pointing_chance")


def evaluate_external(model_path, source: str, metrics_path=None, details_path=None, *, seed: int,
                      layer: str | None = None, project_root=None, progress=None) -> dict:
    """Score the model at model_path on `source`; write the headline and the details (where paths
    are given); return the details."""
    from .data import download
    from .datasets import finite_outputs
    from .gradcam import GradCam
    from .metrics import headline
    from .model_file import load_model
    from .report import headline_scores, mask_scores

    info = read_info(model_path)  # a wrong model path fails before the source is read
    classes = info["classes"]
    with tempfile.TemporaryDirectory(prefix="lungdx-external-") as tmp:
        raw_dir = Path(tmp) / "raw"
        try:
            record = download(source_params(source, seed), raw_dir, progress=progress, project_root=project_root)
        except DiskFull:
            raise
        except LungdxError as exc:  # the download stage's checks speak of its param; this is another one
            raise LungdxError(str(exc).replace("dataset.source", "the external source")) from exc
        found = record["classes"]
        if not set(found) & set(classes):
            raise LungdxError(f"external source {source}: its classes {found} share none with the model's "
                              f"{classes}; nothing to score")
        rows, skipped = inventory(raw_dir, classes, progress)
        for item in skipped:
            log.warning(f"external {source}: not scored {item['path']}: {item['reason']}")
        if not rows:
            raise LungdxError(f"external source {source}: no readable image of the model's classes "
                              f"({len(skipped)} file(s) skipped, each named above)")
        arrays = load_rows(raw_dir, rows, info)

    model, info = load_model(model_path)
    y_true = np.array([r["label"] for r in rows])
    cam = GradCam(model, layer)
    probs, heatmaps = cam.explain(arrays["images"], y_true, desc="external")
    finite_outputs(probs, model_path)
    details = {**external_metrics(y_true, probs, classes, seed), "source": source, "model": info["architecture"],
               "lung_mask": info["input"]["lung_mask"], "layer": cam.layer,
               "classes_scored": [classes[i] for i in sorted(set(y_true.tolist()))],
               "classes_found": found}
    masks = {name: arrays[name] for name in ("masks", "lesions") if name in arrays}
    if masks:
        scores = mask_scores(heatmaps, y_true, classes, masks, seed=seed)
        details["gradcam"] = scores
        details.update(headline_scores(scores))
    details["skipped"] = skipped
    details["intervals"] = {"method": "percentile bootstrap", "over": "images", "resamples": RESAMPLES,
                            "seed": seed, "level": LEVEL}
    if details_path is not None:
        write_json(details_path, details)
    if metrics_path is not None:
        write_json(metrics_path, headline(details, HEADLINE))
    return details
