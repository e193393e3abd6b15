"""The `features` stage: VGG19's frozen base run once per image, cached for head training.

The original ran the frozen base inside every epoch (about 95 min an epoch on
a CPU). A frozen base gives the same output for an image every time, so we
compute the pooled 512-d features once, keep them as a DVC output, and train
the head on them in seconds; a head-only param change does not rerun this.

Its outputs, and how train and evaluate read them: lungdx.feature_cache.

With model = cnn the stage writes only info.json saying so (nothing to cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_dir
from .errors import LungdxError
from .feature_cache import base_digest
from .splits import SPLITS

if TYPE_CHECKING:
    from .params import FeaturesSettings


def features(settings: FeaturesSettings, prepared_dir: str | Path, out_dir: str | Path, batch_size: int = 32) -> dict:
    """The features stage: for vgg19, the base's pooled features of every prepared split into
    out_dir; for cnn, only info.json saying there is nothing to cache."""
    info: dict[str, object] = {"model": settings.architecture}
    with atomic_dir(out_dir) as tmp:
        if settings.architecture == "vgg19":
            from .arrays import load_split, predict, read_meta
            from .models import WeightsUnavailable, make_deterministic, vgg19_base

            # First: it imports TensorFlow quietly, and seeds the random base of weights none.
            make_deterministic(settings.seed)
            import keras

            meta = read_meta(prepared_dir)
            try:
                inputs, base, pooled = vgg19_base(meta["image_size"], settings.weights)
            except WeightsUnavailable as exc:
                raise LungdxError(f"params.yaml: {settings.key('weights')} = {settings.weights!r}: {exc}") from exc
            extractor = keras.Model(inputs, pooled)
            for split in SPLITS:
                images, _ = load_split(prepared_dir, split)
                feats = predict(extractor, images, batch_size, desc=f"features {split}")
                np.save(tmp / f"{split}.npy", feats.astype(np.float32))
            base.save_weights(tmp / "base.weights.h5")
            info.update(
                weights=str(settings.weights),
                image_size=meta["image_size"],
                dim=int(feats.shape[1]),
                base_digest=base_digest(base),
            )
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
