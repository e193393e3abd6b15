"""The prepare stage: fixed-size uint8 arrays per split, masks alongside, deterministic."""

import json

import numpy as np
import pandas as pd

from lungdx.data import download
from lungdx.images import load_for_model, load_mask
from lungdx.prepare import prepare
from lungdx.sample import sample

SETTINGS = {"seed": 239, "classes": [], "per_class": 12, "val_size": 0.2, "test_size": 0.2}


def test_prepare_writes_aligned_uint8_arrays_per_split(tmp_path):
    download({"seed": 4, "dataset": {"source": "synthetic", "synthetic": {"per_class": 12, "image_size": 96}}},
             tmp_path / "raw")
    sample(tmp_path / "raw", tmp_path / "sampled", SETTINGS)
    meta = prepare(tmp_path / "sampled" / "manifest.csv", tmp_path / "raw", tmp_path / "prep", 48)
    manifest = pd.read_csv(tmp_path / "sampled" / "manifest.csv", keep_default_na=False)
    assert meta["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert json.loads((tmp_path / "prep" / "meta.json").read_text()) == meta
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split]
        images = np.load(tmp_path / "prep" / split / "images.npy")
        labels = np.load(tmp_path / "prep" / split / "labels.npy")
        masks = np.load(tmp_path / "prep" / split / "masks.npy")
        lesions = np.load(tmp_path / "prep" / split / "lesions.npy")
        assert images.dtype == np.uint8 and images.shape == (len(rows), 48, 48)
        assert masks.shape == lesions.shape == images.shape
        assert labels.tolist() == rows["label"].tolist()
        # Row i of every array is manifest row i: check the pixels and masks themselves.
        for i, row in enumerate(rows.itertuples()):
            assert np.array_equal(images[i], load_for_model(tmp_path / "raw" / row.path, 48))
            assert np.array_equal(masks[i], load_mask(tmp_path / "raw" / row.mask, 48))
        normal = labels == meta["classes"].index("Normal")
        assert not lesions[normal].any() and all(lesions[i].any() for i in np.flatnonzero(~normal))


def test_prepare_is_deterministic_and_skips_masks_when_there_are_none(tmp_path):
    from tests.helpers import make_flat_dataset

    make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10}, size=50)
    download({"seed": 0, "dataset": {"source": str(tmp_path / "src")}}, tmp_path / "raw")
    sample(tmp_path / "raw", tmp_path / "sampled", SETTINGS)
    for out in ("p1", "p2"):
        prepare(tmp_path / "sampled" / "manifest.csv", tmp_path / "raw", tmp_path / out, 32)
    for name in ("train/images.npy", "val/labels.npy", "test/images.npy", "meta.json"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()
    assert not (tmp_path / "p1" / "train" / "masks.npy").exists()
