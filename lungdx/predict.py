"""Classifying new X-ray files with a trained model, preprocessed exactly as in training.

A model trained on images cut to their lungs (prepare.lung_mask crop or mask) carries its lung
segmenter: each X-ray is cut to the lungs it draws, as in training; an X-ray whose drawn lungs
are implausible is used whole, with a warning and the reason in its result. --mask gives the
lungs instead (a model without a segmenter needs it).

Files are read and answered BATCH at a time, under a progress bar: however many files are
given, no more than one batch of images is held in memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .arrays import finite_outputs, predict
from .atomic import atomic_path
from .console import progress
from .errors import LungdxError
from .images import WHOLE, UnreadableImage, prepare_image, read_gray, write_png
from .model_file import load_model, load_segmenter, read_info

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

BATCH = 32
log = logging.getLogger(__name__)


def predict_files(
    paths: list[Path], model_path: Path, gradcam_dir: Path | None = None, masks: Path | None = None
) -> list[dict]:
    """One result per path, in order: {path, predicted, probabilities[, lungs][, gradcam]} or
    {path, error}. masks: a lung mask file (one image) or a folder of masks named as the images,
    for a model trained on images cut to their lungs (prepare.lung_mask crop or mask); without it
    such a model's own segmenter draws them. "lungs" says which lungs the image was cut to."""
    if gradcam_dir is not None:
        gradcam_dir = overlay_folder(gradcam_dir)  # before the model loads: a bad folder fails fast
    about = read_info(model_path)  # before TensorFlow starts: fails fast
    lung_mask = about["input"]["lung_mask"]
    mask_paths = lung_mask_paths(paths, masks, lung_mask, model_path, about["segmenter"] is not None)
    model, info = load_model(model_path)  # exactly this file: it carries classes and input size
    segmenter = load_segmenter(model_path, info) if lung_mask != "none" and None in mask_paths else None
    classes = info["classes"]
    log.debug(f"{model_path}: {info['architecture']} for {info['image_size']}px images, classes {classes}")
    results: list[dict] = [{"path": str(path)} for path in paths]
    cam, names = None, overlay_names(paths, gradcam_dir) if gradcam_dir is not None else {}
    for indices, images, lungs in readable_batches(
        paths, info["image_size"], results, lung_mask, mask_paths, segmenter
    ):
        if gradcam_dir is None:
            probs = predict(
                model, images, source=model_path, tta=info["tta"]
            )  # nan or inf: a LungdxError, never printed
        else:
            from .heatmaps import PREDICTED, GradCam

            cam = cam or GradCam(model, tta=info["tta"])
            # One pass: the probabilities (as without --gradcam) and the predicted class's heatmap.
            probs, heatmaps = cam.explain(images, np.full(len(images), PREDICTED))
            finite_outputs(probs, model_path)
        for i, p in zip(indices, probs, strict=True):
            results[i]["predicted"] = classes[int(p.argmax())]
            results[i]["probabilities"] = {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)}
        if gradcam_dir is not None:
            for i, image, heatmap, lung in zip(indices, images, heatmaps, lungs, strict=True):
                results[i]["gradcam"] = str(_write_overlay(names[i], image, heatmap, lung))
    return results


def _write_overlay(out: Path, image: np.ndarray, heatmap: np.ndarray, lung: np.ndarray | None) -> Path:
    """One Grad-CAM overlay PNG at `out`, the outline of the lungs the image was cut to drawn on it."""
    from .heatmaps import draw_outline, overlay

    picture = overlay(image, heatmap)  # upsamples the heatmap to the image
    picture = picture if lung is None else draw_outline(picture, lung)  # the lungs it was cut to
    try:
        with atomic_path(out, suffix=".png") as tmp:  # Ctrl-C or a full disk: no half-written PNG
            write_png(tmp, picture)
    except OSError as exc:
        raise LungdxError(f"cannot write the Grad-CAM overlay {out}: {exc.strerror or exc}") from exc
    return out


def overlay_folder(folder: str | Path) -> Path:
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


def lung_mask_paths(
    paths: list[Path], masks: Path | None, lung_mask: str, model_path: str | Path, has_segmenter: bool = False
) -> Sequence[Path | None]:
    """Each image's lung mask file (None where the model takes whole X-rays, or where its
    segmenter draws them): `masks` is one mask file for a single image, or a folder of masks with
    the images' file names."""
    if lung_mask == "none":
        if masks is not None:
            log.warning(f"{model_path} was trained on whole X-rays (lung focus none): --mask {masks} is not used")
        return [None] * len(paths)
    if masks is None:
        if has_segmenter:
            return [None] * len(paths)
        raise LungdxError(
            f"{model_path} was trained on images cut to their lungs (lung focus {lung_mask}) "
            "and carries no lung segmenter to find them: pass --mask MASK (one image) or "
            "--mask FOLDER (masks named as the images), or retrain it with dvc repro (the segment "
            "stage puts a segmenter inside the model)"
        )
    return _given_masks(paths, masks)


def _given_masks(paths: list[Path], masks: Path) -> list[Path]:
    """Each image's mask from --mask: in the folder `masks` by the image's file name, or the file
    `masks` for a single image; never an image itself."""
    if Path(masks).is_dir():
        found = [Path(masks) / Path(p).name for p in paths]
        by_name: dict[str, str] = {}
        for image in paths:  # two X-rays named alike in different folders would share one mask
            other = by_name.setdefault(Path(image).name, os.path.realpath(image))
            if other != os.path.realpath(image):
                raise LungdxError(
                    f"--mask {masks}: {image} and {other} have the same file name, so one mask "
                    f"({Path(masks) / Path(image).name}) would serve both; predict them separately, "
                    "each with its own mask"
                )
    elif len(paths) > 1:
        raise LungdxError(
            f"--mask {masks}: one mask file serves one image, but {len(paths)} were given; pass "
            "a folder of masks named as the images"
        )
    else:
        found = [Path(masks)]
    for image, mask in zip(paths, found, strict=False):  # one --mask file and no image: nothing to check
        if os.path.realpath(image) == os.path.realpath(mask):
            raise LungdxError(
                f"--mask {masks}: the lung mask of {image} would be the X-ray itself; masks live in "
                "their own folder (the Kaggle layout's <Class>/masks)"
            )
    return found


def readable_batches(
    paths: list[Path],
    size: int,
    results: list[dict],
    lung_mask: str = "none",
    mask_paths: Sequence[Path | None] | None = None,
    segmenter: Any = None,
) -> Iterator[tuple[list[int], np.ndarray, list[np.ndarray | None]]]:
    """(indices into paths, images, the lung masks they were cut to or None) of up to BATCH readable
    files at a time, as the model takes them; an unreadable file (or lung mask) gets its reason in
    results[i]["error"] instead."""
    indices, images, lungs = [], [], []
    mask_paths = mask_paths or [None] * len(paths)
    for i, path in enumerate(progress(paths, desc="predict")):
        try:
            image, lung = _prepared(path, size, lung_mask, mask_paths[i], segmenter, results[i])
            images.append(image)
            lungs.append(lung)
            indices.append(i)
        except (UnreadableImage, OSError) as exc:
            results[i]["error"] = _reason(exc)
        if images and (len(images) == BATCH or i == len(paths) - 1):
            yield indices, np.stack(images), lungs
            indices, images, lungs = [], [], []


def _prepared(path, size: int, lung_mask: str, mask_path, segmenter, result: dict):
    """(image, its lung mask as cut, or None) of one file as the model takes it; under lung focus
    result["lungs"] says which lungs it was cut to: "mask file" (--mask), "drawn" (by the model's
    segmenter) or "whole" (none plausible found: result["lungs_problem"] says why; used whole)."""
    if lung_mask == "none":
        return prepare_image(path, size, lung_mask)[:2]
    if mask_path is not None:
        result["lungs"] = "mask file"
        return prepare_image(path, size, lung_mask, mask_path)[:2]
    from .lungs import find_lungs

    drawn, problem = find_lungs(segmenter, read_gray(path))
    if problem:
        log.warning(f"{path}: the model's segmenter found no plausible lungs: {problem}; the whole X-ray is used")
        result["lungs"], result["lungs_problem"] = "whole", problem
        image = prepare_image(path, size, lung_mask, lungs=WHOLE)[0]
        return image, None
    result["lungs"] = "drawn"
    return prepare_image(path, size, lung_mask, lungs=drawn)[:2]


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
