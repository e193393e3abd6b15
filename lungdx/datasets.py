"""Reading the prepared arrays and feeding them to Keras one batch at a time.

The arrays stay uint8 (memory-mapped) until a batch is drawn; only that batch
becomes float32, so no stage ever holds the data set as float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
    """A Keras PyDataset over uint8 images (or float features), converted one batch at a time."""
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()  # no workers: the order of batches must not depend on timing
            self.rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
            self.order = self.rng.permutation(len(x)) if self.rng is not None else np.arange(len(x))

        def __len__(self):
            return (len(x) + batch_size - 1) // batch_size

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])  # sorted: faster memmap reads
            xb = np.asarray(x[idx], dtype=np.float32)
            if xb.ndim == 3:
                xb = xb[..., None]
            if labels is None:
                return (xb,)
            return xb, np.eye(n_classes, dtype=np.float32)[labels[idx]]

        def on_epoch_end(self):
            if self.rng is not None:
                self.order = self.rng.permutation(len(x))

    return ArrayBatches()
