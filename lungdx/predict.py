"""Classifying new X-ray files with a trained model, preprocessed exactly as in training.

Files are read and answered BATCH at a time, under a progress bar: however many files are
given, no more than one batch of images is held in memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .console import progress
from .arrays import finite_outputs, predict
from .errors import LungdxError
from .images import UnreadableImage, load_for_model, write_png
from .model_file import load_model, read_info

BATCH = 32
log = logging.getLogger(__name__)


def predict_files(paths: list[Path], model_path: Path, gradcam_dir: Path | None = None,
                  masks: Path | None = None) -> list[dict]:
    """One result per path, in order: {path, predicted, probabilities[, gradcam]} or {path, error}.
    masks: a lung mask file (one image) or a folder of masks named as the images, for a model
    trained on images cut to their lungs (prepare.lung_mask crop or mask)."""
    if gradcam_dir is not None:
        gradcam_dir = overlay_folder(gradcam_dir)  # before the model loads: a bad folder fails fast
    lung_mask = read_info(model_path)["input"]["lung_mask"]  # before TensorFlow starts: fails fast
    mask_paths = lung_mask_paths(paths, masks, lung_mask, model_path)
    model, info = load_model(model_path)  # exactly this file: it carries classes and input size
    classes = info["classes"]
    log.debug(f"{model_path}: {info['architecture']} for {info['image_size']}px images, classes {classes}")
    results = [{"path": str(path)} for path in paths]
    cam, names = None, overlay_names(paths, gradcam_dir) if gradcam_dir is not None else {}
    for indices, images in readable_batches(paths, info["image_size"], results, lung_mask, mask_paths):
        if gradcam_dir is None:
            probs = predict(model, images, source=model_path)  # nan or inf: a LungdxError, never printed
        else:
            from .heatmaps import GradCam, overlay, PREDICTED

            cam = cam or GradCam(model)
            # One pass: the probabilities and the predicted class's heatmap.
            probs, heatmaps = cam.explain(images, np.full(len(images), PREDICTED))
            finite_outputs(probs, model_path)
        for i, p in zip(indices, probs):
            results[i]["predicted"] = classes[int(p.argmax())]
            results[i]["probabilities"] = {c: round(float(v), 6) for c, v in zip(classes, p)}
        if gradcam_dir is not None:
            for i, image, heatmap in zip(indices, images, heatmaps):
                out = names[i]
                try:
                    with atomic_path(out, suffix=".png") as tmp:  # Ctrl-C or a full disk: no half-written PNG
                        write_png(tmp, overlay(image, heatmap))  # overlay upsamples the heatmap to the image
                except OSError as exc:
                    raise LungdxError(f"cannot write the Grad-CAM overlay {out}: {exc.strerror or exc}") from exc
                results[i]["gradcam"] = str(out)
    return results


def overlay_folder(folder) -> Path:
    """The Grad-CAM output folder, created if needed; a LungdxError naming it if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LungdxError(f"cannot use {folder} as the Grad-CAM folder: {exc.strerror or exc}") from exc
    return folder


def overlay_names(paths: list[Path], folder: Path) -> dict[int, Path]:
    """index -> overlay file: <stem>.gradcam.png, made unique (<stem>-<n>.gradcam.png) where two
    inputs share a stem, and never one of the inputs themselves."""
    inputs = {os.path.realpath(p) for p in paths}
    names, used = {}, set()
    for i, path in enumerate(paths):
        stem, n = Path(path).stem, 1
        out = folder / f"{stem}.gradcam.png"
        while out in used or os.path.realpath(out) in inputs:
            n += 1
            out = folder / f"{stem}-{n}.gradcam.png"
        names[i] = out
        used.add(out)
    return names


def lung_mask_paths(paths: list[Path], masks: Path | None, lung_mask: str, model_path) -> list[Path | None]:
    """Each image's lung mask (None where the model takes whole X-rays): `masks` is one mask file
    for a single image, or a folder of masks with the images' file names."""
    if lung_mask == "none":
        if masks is not None:
            log.warning(f"{model_path} was trained on whole X-rays (lung focus none): --mask {masks} "
                        "is not used")
        return [None] * len(paths)
    if masks is None:
        raise LungdxError(f"{model_path} was trained on images cut to their lungs (lung focus {lung_mask}) "
                          "and cannot prepare an X-ray the same way without its lung mask: pass --mask MASK "
                          "(one image) or --mask FOLDER (masks named as the images)")
    if Path(masks).is_dir():
        found = [Path(masks) / Path(p).name for p in paths]
        by_name: dict[str, str] = {}
        for image in paths:  # two X-rays named alike in different folders would share one mask
            other = by_name.setdefault(Path(image).name, os.path.realpath(image))
            if other != os.path.realpath(image):
                raise LungdxError(f"--mask {masks}: {image} and {other} have the same file name, so one mask "
                                  f"({Path(masks) / Path(image).name}) would serve both; predict them separately, "
                                  "each with its own mask")
    elif len(paths) > 1:
        raise LungdxError(f"--mask {masks}: one mask file serves one image, but {len(paths)} were given; pass "
                          "a folder of masks named as the images")
    else:
        found = [Path(masks)]
    for image, mask in zip(paths, found):
        if os.path.realpath(image) == os.path.realpath(mask):
            raise LungdxError(f"--mask {masks}: the lung mask of {image} would be the X-ray itself; masks live in "
                              "their own folder (the Kaggle layout's <Class>/masks)")
    return found


def readable_batches(paths: list[Path], size: int, results: list[dict], lung_mask: str = "none",
                     mask_paths: list | None = None):
    """(indices into paths, images) of up to BATCH readable files at a time, as the model takes them;
    an unreadable file (or lung mask) gets its reason in results[i]["error"] instead."""
    indices, images = [], []
    mask_paths = mask_paths or [None] * len(paths)
    for i, path in enumerate(progress(paths, desc="predict")):
        try:
            images.append(load_for_model(path, size, lung_mask, mask_paths[i]))
            indices.append(i)
        except (UnreadableImage, OSError) as exc:
            results[i]["error"] = _reason(exc)
        if images and (len(images) == BATCH or i == len(paths) - 1):
            yield indices, np.stack(images)
            indices, images = [], []


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
