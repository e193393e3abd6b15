"""The approaches we measure against, run in a scratch project made by benchmarks.common.

    python -m benchmarks.reference vgg19    the original transfer learning: the whole set as float32
                                            in memory, the end-to-end VGG19 compiled and fit over the
                                            images (validation every epoch), then evaluate on test
    python -m benchmarks.reference floor    one bare predict pass of the frozen VGG19 base (+ GAP)
                                            over every image: the least any feature extraction costs
    python -m benchmarks.reference cnn      the original CNN training: the whole set as float32 in
                                            memory (as the notebook held it), then fit

Same models (lungdx.models), same params.yaml, same images (data/prepared) as our stages.
"""

from __future__ import annotations

import sys

import numpy as np

from lungdx import params
from lungdx.arrays import load_split, read_meta
from lungdx.models import build_cnn, build_vgg19, make_deterministic, vgg19_base
from lungdx.splits import SPLITS


def in_memory(split: str, n_classes: int):
    """One split as the original held it: float32 (N, S, S, 1) images, one-hot labels."""
    images, labels = load_split("data/prepared", split)
    return np.asarray(images, dtype=np.float32)[..., None], np.eye(n_classes, dtype=np.float32)[labels]


def main(which: str) -> None:
    import keras

    cfg = params.load().train
    n = len(read_meta("data/prepared")["classes"])
    make_deterministic(cfg.seed)
    data = {split: in_memory(split, n) for split in SPLITS}
    if which == "floor":
        inputs, _, pooled = vgg19_base(cfg.image_size, cfg.weights)
        everything = np.concatenate([data[s][0] for s in SPLITS])
        keras.Model(inputs, pooled).predict(everything, batch_size=cfg.batch_size, verbose=0)
        return
    if which == "vgg19":
        model, _ = build_vgg19(n, cfg, weights=cfg.weights)
    else:
        model = build_cnn(n, cfg)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(*data["train"], validation_data=data["val"], epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=2)
    print("test", model.evaluate(*data["test"], batch_size=cfg.batch_size, verbose=0))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("vgg19", "floor", "cnn"):
        sys.exit("usage: python -m benchmarks.reference vgg19|floor|cnn  (from a scratch project folder)")
    main(sys.argv[1])
