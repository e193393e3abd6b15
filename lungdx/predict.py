"""Classifying new X-ray files with a trained model, preprocessed exactly as in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .datasets import predict
from .images import UnreadableImage, load_for_model, write_png
from .model_file import load_model


def predict_files(paths: list[Path], model_path: Path, gradcam_dir: Path | None = None) -> list[dict]:
    """One result per path, in order: {path, predicted, probabilities} or {path, error}."""
    model, info = load_model(model_path)  # exactly this file: it carries classes and input size
    size, classes = info["image_size"], info["classes"]

    results, images, good = [], [], []
    for path in paths:
        try:
            images.append(load_for_model(path, size))
            good.append(len(results))
            results.append({"path": str(path)})
        except (UnreadableImage, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            results.append({"path": str(path), "error": reason})
    if not images:
        return results
    batch = np.stack(images)
    probs = predict(model, batch, source=model_path)  # nan or inf: a LungdxError, never printed
    for k, i in enumerate(good):
        results[i]["predicted"] = classes[int(probs[k].argmax())]
        results[i]["probabilities"] = {c: round(float(p), 6) for c, p in zip(classes, probs[k])}
    if gradcam_dir is not None:
        from .gradcam import GradCam, overlay

        cam = GradCam(model).batched(batch, probs.argmax(1), size)
        gradcam_dir = Path(gradcam_dir)
        gradcam_dir.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(good):
            out = gradcam_dir / f"{Path(results[i]['path']).stem}.gradcam.png"
            if any(r.get("gradcam") == str(out) for r in results):  # two inputs with one name
                out = out.with_name(f"{Path(results[i]['path']).stem}-{i + 1}.gradcam.png")
            write_png(out, overlay(batch[k], cam[k]))
            results[i]["gradcam"] = str(out)
    return results
