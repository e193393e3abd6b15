"""The cached VGG19 features the features stage writes, and which model they fit.

    data/features/<split>.npy       float32 (N, 512), in prepared order
    data/features/base.weights.h5   the base's weights, for the end-to-end model
    data/features/info.json         architecture, weights, image size, digest of the base's weights

train fits the VGG19 head on them; evaluate reuses the test split's when the model's base has
exactly the cached weights (same digest), so the base need not run over the test images again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import LungdxError
from .splits import SPLITS

if TYPE_CHECKING:
    import keras


def base_digest(model: keras.Model) -> str:
    """sha256 of the VGG19 conv weights (layers block1_* .. block5_*) of a base or a whole model."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if layer.name.startswith("block"):
            for weights in layer.get_weights():
                digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def cached_features_for(model: keras.Model, features_dir: str | Path, split: str) -> np.ndarray | None:
    """The split's cached features if `model` has exactly the base that computed them, else None."""
    folder = Path(features_dir)
    try:
        info = json.loads((folder / "info.json").read_text())
    except (OSError, ValueError):
        return None
    if "base_digest" not in info or not (folder / f"{split}.npy").is_file():
        return None
    if info["base_digest"] != base_digest(model):  # fine-tuned, or another base
        return None
    return np.load(folder / f"{split}.npy")


def load_features(features_dir: str | Path, image_size: int) -> dict[str, np.ndarray]:
    """Every split's cached VGG19 features of image_size px images; a LungdxError saying what to
    run where there are none."""
    folder = Path(features_dir)
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("model") != "vgg19" or info.get("image_size") != image_size:
        raise LungdxError(
            f"{folder}: no VGG19 features for {image_size}px images; run dvc repro so the features stage runs first"
        )
    return {split: np.load(folder / f"{split}.npy") for split in SPLITS}
