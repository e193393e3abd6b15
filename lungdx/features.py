"""The `features` stage: VGG19's frozen base run once per image, cached for head training.

The original ran the frozen base inside every epoch (about 95 min an epoch on
a CPU). A frozen base gives the same output for an image every time, so we
compute the pooled 512-d features once, keep them as a DVC output, and train
the head on them in seconds; a head-only param change does not rerun this.

    data/features/<split>.npy       float32 (N, 512), in prepared order
    data/features/base.weights.h5   the base's weights, for the end-to-end model
    data/features/info.json         architecture, weights, image size, digest of the base's weights

Evaluate reuses the cached test features when the model's base has exactly the
cached weights (same digest): the base then need not run over the test images again.

With model = cnn the stage writes only info.json saying so (nothing to cache).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_dir
from .errors import LungdxError
from .sample import SPLITS


def extract(params: dict, prepared_dir="data/prepared", out_dir="data/features", batch_size: int = 32) -> dict:
    from .datasets import load_split, predict, read_meta
    from .models import make_deterministic
    from .params import model_settings

    cfg = model_settings(params)
    info = {"model": cfg["model"]}
    with atomic_dir(out_dir) as tmp:
        if cfg["model"] == "vgg19":
            # First: it imports TensorFlow quietly, and seeds the random base of weights none.
            make_deterministic(cfg["seed"])
            import keras

            from .models import vgg19_base

            meta = read_meta(prepared_dir)
            inputs, base, pooled = vgg19_base(meta["image_size"], cfg["weights"])
            extractor = keras.Model(inputs, pooled)
            for split in SPLITS:
                images, _ = load_split(prepared_dir, split)
                feats = predict(extractor, images, batch_size, desc=f"features {split}")
                np.save(tmp / f"{split}.npy", feats.astype(np.float32))
            base.save_weights(tmp / "base.weights.h5")
            info.update(weights=str(cfg["weights"]), image_size=meta["image_size"], dim=int(feats.shape[1]),
                        base_digest=base_digest(base))
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def base_digest(model) -> str:
    """sha256 of the VGG19 conv weights (layers block1_* .. block5_*) of a base or a whole model."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if layer.name.startswith("block"):
            for weights in layer.get_weights():
                digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def cached_features_for(model, features_dir: str | Path, split: str) -> np.ndarray | None:
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


def load_features(features_dir: str | Path, cfg: dict) -> dict[str, np.ndarray]:
    folder = Path(features_dir)
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("model") != "vgg19" or info.get("image_size") != cfg["image_size"]:
        raise LungdxError(f"{folder}: no VGG19 features for {cfg['image_size']}px images; "
                          "run dvc repro so the features stage runs first")
    return {split: np.load(folder / f"{split}.npy") for split in SPLITS}
