"""Reading the prepared arrays and feeding them to Keras one batch at a time.

The arrays stay uint8 until a batch is drawn; only that batch becomes float32,
so no stage ever holds the data set as float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .console import import_tensorflow, progress
from .errors import LungdxError

if TYPE_CHECKING:
    from collections.abc import Callable

    import keras


def load_split(prepared_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (memory-mapped uint8, N x S x S) and labels of one split."""
    folder = Path(prepared_dir) / split
    if not (folder / "images.npy").is_file():
        raise LungdxError(f"{folder}/images.npy: not found; run the prepare stage first (dvc repro prepare)")
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy")


def load_masks(prepared_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    """The split's lung ("masks") and lesion ("lesions") masks that exist, memory-mapped uint8 0/255,
    lying on its images."""
    folder = Path(prepared_dir) / split
    return {
        name: np.load(folder / f"{name}.npy", mmap_mode="r")
        for name in ("masks", "lesions")
        if (folder / f"{name}.npy").is_file()
    }


def scored_test_split(model_path: str | Path, info: dict, prepared_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The prepared test split that model_path (its metadata: info) is scored on; a LungdxError
    naming both unless the two fit: some images, of the model's size, of classes it knows."""
    images, labels = load_split(prepared_dir, "test")
    if len(labels) == 0:
        raise LungdxError(
            f"{prepared_dir}/test holds no images to score {model_path} on; "
            "give the sample stage a larger test share or more images, then dvc repro"
        )
    if images.shape[1] != info["image_size"]:
        raise LungdxError(
            f"{model_path} expects {info['image_size']}px images but {prepared_dir} holds "
            f"{images.shape[1]}px ones; run dvc repro"
        )
    if labels.max() >= len(info["classes"]):
        raise LungdxError(
            f"{model_path} knows {len(info['classes'])} classes but {prepared_dir} holds "
            f"{int(labels.max()) + 1}; run dvc repro so that train runs on this data"
        )
    prepared_focus = read_meta(prepared_dir).get("lung_mask", "none")
    if prepared_focus != info["input"]["lung_mask"]:
        raise LungdxError(
            f"{model_path} was trained on images with lung focus {info['input']['lung_mask']!r} but "
            f"{prepared_dir} holds images with {prepared_focus!r} (the prepare stage's); run dvc repro "
            "so that train runs on this data"
        )
    return images, labels


def read_meta(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text())


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch of n items (the last one may be short)."""
    return (n + batch_size - 1) // batch_size


# one idea: the training input pipeline (a long docstring says why each choice was made)
def batches(
    x: np.ndarray,
    labels: np.ndarray | None,
    n_classes: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    epochs: int = 1,
    balanced: bool = False,
) -> Any:
    """A tf.data pipeline over uint8 images (or float features), each batch made float32 in the graph.

    The split is held once as it comes (uint8 images: a quarter of float32). The dataset holds
    `epochs` epochs one after the other, so fit it with steps_per_epoch (Keras then keeps one
    iterator across epochs). Each epoch's order is numpy's permutation drawn from `shuffle_seed`
    anew (without a seed, the stored order), each batch sorted so that it reads in storage order:
    every run sees the same batches. `balanced` (training with a shuffle_seed): each epoch holds
    every class as often as the largest (epoch_size items), a smaller class's images repeated in a
    seeded draw, so no batch leans toward the common class. Python runs once per epoch, for that permutation; gathering
    and converting batches are TensorFlow ops. Python per batch cost the default CNN a quarter of
    its epoch time (a Keras PyDataset, benchmarks/cnn_input.py) and later about 1.5 s of 6.5 (a
    generator of index batches), and tf.data's autotuning stalled some epochs 3-4 s before their
    first batch (docs/performance.md).
    """
    tf = import_tensorflow()
    n = len(x)
    if epochs < 1 or n == 0:
        raise LungdxError(f"batches of {n} items for {epochs} epochs: need at least one of each")
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    images = tf.constant(np.asarray(x))
    onehot = None if labels is None else tf.constant(np.eye(n_classes, dtype=np.float32)[labels])

    def take(idx: Any) -> tuple:
        xb = tf.cast(tf.gather(images, idx), tf.float32)
        if x.ndim == 3:
            xb = xb[..., None]  # one gray channel
        return (xb,) if onehot is None else (xb, tf.gather(onehot, idx))

    draw, size = None, n
    if balanced:
        if rng is None or labels is None:
            raise ValueError("balanced batches are drawn for training: they need labels and a shuffle_seed")
        draw, size = balanced_order(labels, rng), epoch_size(labels, True)
    indices = _index_batches(tf, size, batch_size, epochs, rng, draw)
    options = tf.data.Options()
    options.autotune.enabled = False  # its background tuning stalled epochs by seconds (above)
    return indices.map(take).prefetch(1).with_options(options)


def epoch_size(labels: np.ndarray, balanced: bool) -> int:
    """Items in one training epoch: the split's, or under balanced batches, every class as many as the largest."""
    if not balanced:
        return len(labels)
    counts = np.bincount(np.asarray(labels))
    return int(counts.max()) * int((counts > 0).sum())


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """One epoch's order under balanced batches, drawn from rng at each call: every image of each
    class once, and a smaller class topped up to the largest's count with a seeded choice of its
    own images (a whole repeat of the class first, where it is several times smaller)."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    largest = max(len(idx) for idx in by_class)

    def order() -> np.ndarray:
        parts = []
        for idx in by_class:
            repeats, extra = divmod(largest, len(idx))
            parts += [rng.permutation(idx) for _ in range(repeats)] + [rng.choice(idx, extra, replace=False)]
        return rng.permutation(np.concatenate(parts))

    return order


def _index_batches(
    tf: Any,
    n: int,
    batch_size: int,
    epochs: int,
    rng: np.random.Generator | None,
    draw: Callable[[], np.ndarray] | None = None,
) -> Any:
    """A tf.data pipeline (`tf`: TensorFlow) of the batches' indices: `epochs` epochs one after the other, each in
    the order of rng's next permutation of range(n) (the stored order without an rng; `draw`'s next
    order of n items where given), each batch sorted."""

    # called once per epoch, in order: the k-th call draws the k-th permutation
    def epoch_order(_: object) -> np.ndarray:
        if draw is not None:
            return draw()
        return rng.permutation(n) if rng is not None else np.arange(n)

    # Keep this map sequential (tf.data's default): the rng's state counts the epochs.
    orders = tf.data.Dataset.range(epochs).map(
        lambda e: tf.ensure_shape(tf.numpy_function(epoch_order, [e], tf.int64), [n])
    )
    indices = orders.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    # A known length lets Keras plan its epochs instead of running each one into the end of the data.
    return indices.map(tf.sort).apply(tf.data.experimental.assert_cardinality(epochs * steps_per_epoch(n, batch_size)))


class NonFiniteOutputs(LungdxError):
    """A model gave nan or inf: its weights are broken (most often, its training diverged)."""

    def __init__(self, message: str, bad: int, total: int) -> None:
        super().__init__(message)
        self.bad, self.total = bad, total


TTA_SHIFT = 0.04  # test-time augmentation: the share of the side each shifted copy moves


def predict(
    model: keras.Model,
    x: np.ndarray,
    batch_size: int = 32,
    source: str | Path | None = None,
    desc: str | None = None,
    tta: bool = False,
) -> np.ndarray:
    """model's outputs for uint8 images (or float features), one float32 batch at a time;
    with `desc`, under a progress bar of that name counting the batches. `tta` (images only): each
    output the mean over the image and four copies shifted by TTA_SHIFT of the side, up, down,
    left and right (the small shifts training's augmentation makes; no flip, see models.augmentation).

    A plain loop of predict_on_batch: inference needs no shuffling or prefetching, and this
    is the same work as one bare `predict` over arrays in memory (benchmarks/vgg19_transfer.py).

    Outputs that are not finite raise NonFiniteOutputs (a LungdxError) naming `source`, the
    model file, instead of passing nan on to a metric, a report or a user.
    """
    out = []
    starts = range(0, len(x), batch_size)
    for start in starts if desc is None else progress(starts, desc=desc):
        xb = np.asarray(x[start : start + batch_size], dtype=np.float32)
        out.append(batch_outputs(model, xb[..., None] if xb.ndim == 3 else xb, tta))
    return finite_outputs(np.concatenate(out), source)


def batch_outputs(model: keras.Model, xb: np.ndarray, tta: bool) -> np.ndarray:
    """model's outputs for one float32 batch; `tta`: the mean over it and its shifted_views."""
    return np.mean([model.predict_on_batch(view) for view in (shifted_views(xb) if tta else [xb])], axis=0)


def shifted_views(xb: np.ndarray) -> list[np.ndarray]:
    """A batch of (N, S, S, 1) images and four copies moved by TTA_SHIFT of the side, up, down,
    left and right, black where the image moved away (as training's shifts fill)."""
    if xb.ndim != 4:
        raise ValueError(f"test-time augmentation shifts images, not features of shape {xb.shape[1:]}")
    d = max(1, round(TTA_SHIFT * xb.shape[1]))
    views = [xb]
    for axis in (1, 2):
        for step in (d, -d):
            moved = np.roll(xb, step, axis=axis)
            edge = [slice(None)] * 4
            edge[axis] = slice(0, step) if step > 0 else slice(step, None)
            moved[tuple(edge)] = 0
            views.append(moved)
    return views


def finite_outputs(out: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """`out`, a model's outputs one row per image, if all are finite; else NonFiniteOutputs
    naming `source`, the model file."""
    finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        what = f"{source}: the model's" if source is not None else "the model's"
        raise NonFiniteOutputs(
            f"{what} outputs are not finite numbers for {bad} of {len(out)} images, so its "
            "weights are broken (did its training diverge?); retrain it: dvc repro -f train",
            bad,
            len(out),
        )
    return out
