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
from .console import import_tensorflow
from .errors import LungdxError
from .images import PREPROCESSING, PREPROCESSING_STEPS

INFO_ENTRY = "lungdx.json"


def save_model(model, path: str | Path, classes: list[str], image_size: int, architecture: str) -> dict:
    """Save `model` with its lungdx metadata to `path`, atomically; returns the metadata."""
    from . import __version__

    info = {"classes": list(classes), "image_size": int(image_size), "architecture": architecture,
            "input": {"channels": 1, "dtype": "float32", "range": [0, 255],
                      "preprocessing": PREPROCESSING, "steps": PREPROCESSING_STEPS},
            "lungdx_version": __version__}
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(INFO_ENTRY, json.dumps(info, indent=2) + "\n")
    return info


MAX_INFO_BYTES = 1 << 20  # class names and a few settings: anything larger is not ours


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
            entry = archive.getinfo(INFO_ENTRY)
            if entry.file_size > MAX_INFO_BYTES:
                raise LungdxError(f"{path}: its {INFO_ENTRY} declares {entry.file_size} bytes, more than "
                                  f"{MAX_INFO_BYTES}: not a lungdx model file")
            info = json.loads(archive.read(entry))
    except KeyError:
        raise LungdxError(f"{path}: a Keras file without lungdx's {INFO_ENTRY} (class names, input size); "
                          "models saved by lungdx carry it: retrain with dvc repro -f train") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LungdxError(f"{path}: not a readable .keras model file ({exc}); retrain it with "
                          "dvc repro -f train") from exc
    _check_info(path, info)
    return info


def _check_info(path: Path, info) -> None:
    def bad(what: str):
        raise LungdxError(f"{path}: its {INFO_ENTRY} is damaged ({what}); retrain with dvc repro -f train")

    if not isinstance(info, dict):
        bad("not a JSON object")
    classes = info.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        bad("classes must be a list of at least two distinct names")
    size = info.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        bad("image_size must be an integer >= 16")
    preprocessing = info.get("input", {}).get("preprocessing") if isinstance(info.get("input"), dict) else None
    if preprocessing != PREPROCESSING:
        raise LungdxError(f"{path}: made for input preprocessing {preprocessing!r}, but this lungdx prepares "
                          f"images as {PREPROCESSING!r}; use the lungdx version that saved it "
                          f"({info.get('lungdx_version', 'unknown')})")


def load_model(path: str | Path):
    """(Keras model, lungdx metadata) of a model file saved by save_model; the two must agree."""
    info = read_info(path)  # before importing Keras: a wrong path costs no TensorFlow start-up
    import_tensorflow()  # the first TensorFlow call of evaluating, Grad-CAM and predicting: quietly
    import keras

    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise LungdxError(f"{path}: could not be loaded ({type(exc).__name__}: {exc}); retrain it with "
                          "dvc repro -f train") from exc
    expected_input = (None, info["image_size"], info["image_size"], 1)
    if tuple(model.input_shape) != expected_input or model.output_shape[-1] != len(info["classes"]):
        raise LungdxError(f"{path}: its network takes {tuple(model.input_shape)[1:]} and gives "
                          f"{model.output_shape[-1]} outputs, but its {INFO_ENTRY} says "
                          f"{expected_input[1:]} and {len(info['classes'])} classes; retrain with dvc repro -f train")
    return model, info
