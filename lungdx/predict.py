"""Classifying new X-ray files with a trained model, preprocessed exactly as in training.

Files are read and answered BATCH at a time, under a progress bar: however many files are
given, no more than one batch of images is held in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .console import progress
from .datasets import predict
from .images import UnreadableImage, load_for_model, write_png
from .model_file import load_model

BATCH = 32
log = logging.getLogger(__name__)


def predict_files(paths: list[Path], model_path: Path, gradcam_dir: Path | None = None) -> list[dict]:
    """One result per path, in order: {path, predicted, probabilities[, gradcam]} or {path, error}."""
    model, info = load_model(model_path)  # exactly this file: it carries classes and input size
    classes = info["classes"]
    log.debug(f"{model_path}: {info['architecture']} for {info['image_size']}px images, classes {classes}")
    results = [{"path": str(path)} for path in paths]
    cam, written = None, set()
    for indices, images in readable_batches(paths, info["image_size"], results):
        probs = predict(model, images, source=model_path)  # nan or inf: a LungdxError, never printed
        for i, p in zip(indices, probs):
            results[i]["predicted"] = classes[int(p.argmax())]
            results[i]["probabilities"] = {c: round(float(v), 6) for c, v in zip(classes, p)}
        if gradcam_dir is not None:
            from .gradcam import GradCam, overlay

            cam = cam or GradCam(model)
            Path(gradcam_dir).mkdir(parents=True, exist_ok=True)
            for i, image, heatmap in zip(indices, images, cam.heatmaps(images, probs.argmax(1))):
                stem = Path(paths[i]).stem
                out = Path(gradcam_dir) / f"{stem}.gradcam.png"
                if out in written:  # two inputs with one name
                    out = out.with_name(f"{stem}-{i + 1}.gradcam.png")
                write_png(out, overlay(image, heatmap))  # overlay upsamples the heatmap to the image
                written.add(out)
                results[i]["gradcam"] = str(out)
    return results


def readable_batches(paths: list[Path], size: int, results: list[dict]):
    """(indices into paths, images) of up to BATCH readable files at a time, as the model takes them;
    an unreadable file gets its reason in results[i]["error"] instead."""
    indices, images = [], []
    for i, path in enumerate(progress(paths, desc="predict")):
        try:
            images.append(load_for_model(path, size))
            indices.append(i)
        except (UnreadableImage, OSError) as exc:
            results[i]["error"] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if images and (len(images) == BATCH or i == len(paths) - 1):
            yield indices, np.stack(images)
            indices, images = [], []
