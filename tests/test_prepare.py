"""The prepare stage: fixed-size uint8 arrays per split, masks alongside, deterministic."""

import json

import numpy as np
import pandas as pd
import pytest

from lungdx.download import download
from lungdx.errors import LungdxError
from lungdx.images import load_for_model, prepare_image
from lungdx.prepare import prepare
from lungdx.sample import sample
from tests.helpers import list_lung_masks, settings

SETTINGS = {"seed": 239, "dataset.classes": [], "sample.per_class": 12, "sample.val_size": 0.2, "sample.test_size": 0.2}


def download_from(source, raw_dir, **changes):
    """The download stage, params.yaml's settings with dataset.source = `source`."""
    return download(settings({"seed": 0, "dataset.source": str(source), **changes}).download, raw_dir)


def synthetic(raw_dir, per_class, image_size=96, seed=4):
    return download_from(
        "synthetic",
        raw_dir,
        **{"seed": seed, "dataset.synthetic.per_class": per_class, "dataset.synthetic.image_size": image_size},
    )


def sample_into(raw_dir, out_dir, **changes):
    return sample(settings({**SETTINGS, **changes}).sample, raw_dir, out_dir)


def run_prepare(tmp_path, out, image_size, lung_mask="none"):
    """prepare of tmp_path/sampled from tmp_path/raw into tmp_path/out."""
    prep = settings({"prepare.image_size": image_size, "prepare.lung_mask": lung_mask}).prepare
    manifest = tmp_path / "sampled" / "manifest.csv"
    segmented = list_lung_masks(tmp_path, manifest, tmp_path / "raw", f"segmented_{out}")
    return prepare(prep, manifest, tmp_path / "raw", segmented, tmp_path / out)


def test_prepare_writes_aligned_uint8_arrays_per_split(tmp_path):
    synthetic(tmp_path / "raw", per_class=12)
    sample_into(tmp_path / "raw", tmp_path / "sampled")
    meta = run_prepare(tmp_path, "prep", 48)
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
            assert np.array_equal(images[i], load_for_model(tmp_path / "raw" / row.path, 48, "none"))
            assert np.array_equal(
                masks[i], prepare_image(tmp_path / "raw" / row.path, 48, "none", tmp_path / "raw" / row.mask)[1]
            )
        normal = labels == meta["classes"].index("Normal")
        assert not lesions[normal].any() and all(lesions[i].any() for i in np.flatnonzero(~normal))


def test_prepare_is_deterministic_and_skips_masks_when_there_are_none(tmp_path):
    from tests.helpers import make_flat_dataset

    make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10}, size=50)
    download_from(tmp_path / "src", tmp_path / "raw")
    sample_into(tmp_path / "raw", tmp_path / "sampled")
    for out in ("p1", "p2"):
        run_prepare(tmp_path, out, 32)
    for name in ("train/images.npy", "val/labels.npy", "test/images.npy", "meta.json"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()
    assert not (tmp_path / "p1" / "train" / "masks.npy").exists()


@pytest.mark.parametrize("policy", ["crop", "mask"])
def test_lung_focus_cuts_images_and_their_masks_alike(tmp_path, policy):
    """crop/mask: each image is cut to its lungs, and its lung and lesion masks with it, so the
    masks still lie on the image (what Grad-CAM's lung share is measured against)."""
    from lungdx.images import focus_on_lungs, native_mask, read_gray, resize_square

    synthetic(tmp_path / "raw", per_class=6)
    sample_into(tmp_path / "raw", tmp_path / "sampled", **{"sample.per_class": 6})
    meta = run_prepare(tmp_path, "prep", 48, policy)
    whole = run_prepare(tmp_path, "whole", 48)
    assert meta["lung_mask"] == policy and whole["lung_mask"] == "none"
    manifest = pd.read_csv(tmp_path / "sampled" / "manifest.csv", keep_default_na=False)
    rows = manifest[manifest["split"] == "train"]
    images = np.load(tmp_path / "prep" / "train" / "images.npy")
    masks = np.load(tmp_path / "prep" / "train" / "masks.npy")
    lesions = np.load(tmp_path / "prep" / "train" / "lesions.npy")
    for i, row in enumerate(rows.itertuples()):
        img = read_gray(tmp_path / "raw" / row.path)
        lungs = native_mask(tmp_path / "raw" / row.mask, img.shape)
        focused, (top, bottom, left, right) = focus_on_lungs(img, lungs, policy)
        assert np.array_equal(images[i], resize_square(focused, 48))
        assert np.array_equal(
            images[i], load_for_model(tmp_path / "raw" / row.path, 48, policy, tmp_path / "raw" / row.mask)
        )  # what predict does
        assert np.array_equal(masks[i], resize_square(lungs[top:bottom, left:right], 48, is_mask=True))
        lesion = native_mask(tmp_path / "raw" / row.lesion, img.shape)[top:bottom, left:right]
        assert np.array_equal(lesions[i], resize_square(lesion, 48, is_mask=True))
    # The lungs fill more of a cropped image than of the whole X-ray.
    assert masks.mean() > np.load(tmp_path / "whole" / "train" / "masks.npy").mean() * 1.3
    if policy == "mask":  # beyond the lungs, black where crop (whose only black is the padding) is not
        run_prepare(tmp_path, "crop", 48, "crop")
        cropped = np.load(tmp_path / "crop" / "train" / "images.npy")
        assert (images[masks == 0] == 0).mean() > (cropped[masks == 0] == 0).mean() + 0.2


def test_lung_focus_without_masks_names_how_many_and_which(tmp_path):
    from tests.helpers import make_flat_dataset

    make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10}, size=50)
    download_from(tmp_path / "src", tmp_path / "raw")
    sample_into(tmp_path / "raw", tmp_path / "sampled")
    with pytest.raises(
        LungdxError,
        match=r"prepare.lung_mask is crop, but 20 of 20 images have no lung "
        r"mask .*: A/images/A-\d+.png, .* and 15 more; .*lung_mask: none",
    ):
        run_prepare(tmp_path, "prep", 32, "crop")
    assert not (tmp_path / "prep").exists()
