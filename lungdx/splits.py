"""The layout of the splits: their names, and the manifest the sample stage writes.

    data/sampled/manifest.csv   one row per sampled image: path (relative to data/raw), class,
                                label, split, sha256, mask, lesion (mask paths, "" for none),
                                width, height; sorted by split (SPLITS order), label, path

The prepared arrays (lungdx.arrays) and every report keep this order, so row i of a split's
manifest is image i of its arrays.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import LungdxError

SPLITS = ("train", "val", "test")
COLUMNS = ["path", "class", "label", "split", "sha256", "mask", "lesion", "width", "height"]


def load_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest at `path`, every column as written (mask paths stay "" for none)."""
    path = Path(path)
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the sample stage first (dvc repro sample)")
    return pd.read_csv(path, keep_default_na=False, dtype={"path": str, "class": str, "mask": str, "lesion": str})
