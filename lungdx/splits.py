"""The layout of the splits: their names, and the manifest the sample stage writes.

    data/sampled/manifest.csv   one row per sampled image: path (relative to data/raw), class,
                                label, split, sha256, mask, lesion (mask paths, "" for none),
                                width, height; sorted by split (SPLITS order), label, path

    data/segmented/lung_masks.csv  path (as in the manifest), origin, mask: each image's lung mask, the
                                dataset's (origin dataset, relative to data/raw) or the segmenter's
                                (segmenter, or whole where its lungs are implausible; relative to
                                data/segmented); written by the segment stage (lungdx.segment)

The prepared arrays (lungdx.arrays) and every report keep this order, so row i of a split's
manifest is image i of its arrays.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import LungdxError

SPLITS = ("train", "val", "test")
LUNG_MASKS = "lung_masks.csv"
SEGMENTER_FILE = "segmenter.keras"  # data/segmented's lung segmenter, carried by crop and mask models
COLUMNS = ["path", "class", "label", "split", "sha256", "mask", "lesion", "width", "height"]


def test_paths(manifest: str | Path) -> list[str]:
    """The test split's image paths in the manifest, in the order of the prepared test arrays."""
    rows = load_manifest(manifest)
    return rows[rows["split"] == "test"]["path"].tolist()


def load_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest at `path`, every column as written (mask paths stay "" for none)."""
    path = Path(path)
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the sample stage first (dvc repro sample)")
    return pd.read_csv(path, keep_default_na=False, dtype={"path": str, "class": str, "mask": str, "lesion": str})


def load_lung_masks(segmented_dir: str | Path, raw_dir: str | Path) -> dict[str, tuple[str, Path]]:
    """data/segmented's lung masks: image path (as in the manifest) -> (origin, mask file)."""
    path = Path(segmented_dir) / LUNG_MASKS
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the segment stage first (dvc repro segment)")
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    base = {"dataset": Path(raw_dir), "segmenter": Path(segmented_dir), "whole": Path(segmented_dir)}
    try:
        return {r.path: (r.origin, base[r.origin] / r.mask) for r in table.itertuples()}
    except (AttributeError, KeyError) as exc:
        raise LungdxError(
            f"{path}: not the table the segment stage writes ({exc}); run it again: dvc repro -f segment"
        ) from exc
