"""Reading the prepared arrays and feeding them to Keras one batch at a time.

The arrays stay uint8 until a batch is drawn; only that batch becomes float32,
so no stage ever holds the data set as float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .console import import_tensorflow, progress
from .errors import LungdxError


def load_split(prepared_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (memory-mapped uint8, N x S x S) and labels of one split."""
    folder = Path(prepared_dir) / split
    if not (folder / "images.npy").is_file():
        raise LungdxError(f"{folder}/images.npy: not found; run the prepare stage first (dvc repro prepare)")
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy")


def read_meta(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text())


def batches(x: np.ndarray, labels: np.ndarray | None, n_classes: int, batch_size: int,
            shuffle_seed: int | None = None):
    """A tf.data pipeline over uint8 images (or float features), each batch made float32 in the graph.

    The split is held once as it comes (uint8 images: a quarter of float32). Gathering and
    converting a batch are TensorFlow ops, not Python: a Python batch generator cost a quarter
    of the CNN's epoch time (benchmarks/cnn_input.py). The order is numpy's, drawn from
    `shuffle_seed` anew for each epoch (each pass over the dataset), so every run sees the
    same batches; without a seed, the stored order.
    """
    tf = import_tensorflow()
    n = len(x)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None

    def batch_indices():
        order = rng.permutation(n) if rng is not None else np.arange(n)
        for start in range(0, n, batch_size):
            yield np.sort(order[start:start + batch_size])  # sorted: reads in storage order

    images = tf.constant(np.asarray(x))
    onehot = None if labels is None else tf.constant(np.eye(n_classes, dtype=np.float32)[labels])

    def take(idx):
        xb = tf.cast(tf.gather(images, idx), tf.float32)
        if x.ndim == 3:
            xb = xb[..., None]  # one gray channel
        return (xb,) if onehot is None else (xb, tf.gather(onehot, idx))

    indices = tf.data.Dataset.from_generator(batch_indices, output_signature=tf.TensorSpec([None], tf.int64))
    # A known length lets Keras plan its epochs instead of running each one into the end of the data.
    indices = indices.apply(tf.data.experimental.assert_cardinality((n + batch_size - 1) // batch_size))
    return indices.map(take).prefetch(tf.data.AUTOTUNE)


class NonFiniteOutputs(LungdxError):
    """A model gave nan or inf: its weights are broken (most often, its training diverged)."""

    def __init__(self, message: str, bad: int, total: int):
        super().__init__(message)
        self.bad, self.total = bad, total


def predict(model, x: np.ndarray, batch_size: int = 32, source: str | Path | None = None,
            desc: str | None = None) -> np.ndarray:
    """model's outputs for uint8 images (or float features), one float32 batch at a time;
    with `desc`, under a progress bar of that name counting the batches.

    A plain loop of predict_on_batch: inference needs no shuffling or prefetching, and this
    is the same work as one bare `predict` over arrays in memory (benchmarks/vgg19_transfer.py).

    Outputs that are not finite raise NonFiniteOutputs (a LungdxError) naming `source`, the
    model file, instead of passing nan on to a metric, a report or a user.
    """
    out = []
    starts = range(0, len(x), batch_size)
    for start in starts if desc is None else progress(starts, desc=desc):
        xb = np.asarray(x[start:start + batch_size], dtype=np.float32)
        out.append(model.predict_on_batch(xb[..., None] if xb.ndim == 3 else xb))
    out = np.concatenate(out)
    finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        what = f"{source}: the model's" if source is not None else "the model's"
        raise NonFiniteOutputs(f"{what} outputs are not finite numbers for {bad} of {len(out)} images, so its "
                               "weights are broken (did its training diverge?); retrain it: dvc repro -f train",
                               bad, len(out))
    return out
