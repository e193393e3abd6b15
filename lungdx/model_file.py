"""The model file: one `.keras` that carries everything predicting needs.

Keras saves a `.keras` file as a zip (config.json, metadata.json, model.weights.h5).
We add one entry, `lungdx.json`, with the class names in output order, the input size
and how an image file becomes the model's input, so that the file alone -- copied, or
fetched with `dvc artifacts get` -- is enough to predict. Keras ignores the entry.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .atomic import atomic_path
from .errors import LungdxError
from .images import PREPROCESSING, PREPROCESSING_STEPS

INFO_ENTRY = "lungdx.json"


def save_model(model, path: str | Path, classes: list[str], image_size: int, architecture: str) -> dict:
    """Save `model` with its lungdx metadata to `path`, atomically; returns the metadata."""
    from . import __version__

    info = {"classes": list(classes), "image_size": int(image_size), "architecture": architecture,
            "input": {"shape": [int(image_size), int(image_size), 1], "dtype": "float32", "range": [0, 255],
                      "preprocessing": PREPROCESSING, "steps": PREPROCESSING_STEPS},
            "lungdx_version": __version__}
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(INFO_ENTRY, json.dumps(info, indent=2) + "\n")
    return info


def read_info(path: str | Path) -> dict:
    """The lungdx metadata of a model file, checked, without loading the network."""
    path = Path(path)
    if path.is_dir():
        raise LungdxError(f"{path}: is a folder; give the model file itself, e.g. {path / 'model.keras'}")
    if not path.is_file():
        raise LungdxError(f"{path}: not found; train a model first (dvc repro train), or fetch one with "
                          "dvc artifacts get REPO lung-xray-classifier")
    try:
        with zipfile.ZipFile(path) as archive:
            info = json.loads(archive.read(INFO_ENTRY))
    except KeyError:
        raise LungdxError(f"{path}: a Keras file without lungdx's {INFO_ENTRY} (class names, input size); "
                          "models saved by lungdx carry it: retrain with dvc repro -f train") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LungdxError(f"{path}: not a readable .keras model file ({exc}); retrain it with "
                          "dvc repro -f train") from exc
    if info.get("input", {}).get("preprocessing") != PREPROCESSING:
        raise LungdxError(f"{path}: made for input preprocessing {info.get('input', {}).get('preprocessing')!r}, "
                          f"but this lungdx prepares images as {PREPROCESSING!r}; use the lungdx version that "
                          f"saved it ({info.get('lungdx_version', 'unknown')})")
    return info


def load_model(path: str | Path):
    """(Keras model, lungdx metadata) of a model file saved by save_model."""
    import keras

    info = read_info(path)
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise LungdxError(f"{path}: could not be loaded ({type(exc).__name__}: {exc}); retrain it with "
                          "dvc repro -f train") from exc
    return model, info
