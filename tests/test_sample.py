"""The sample stage: seeded, stratified, duplicate-free, read-only on raw data."""

import shutil

import numpy as np
import pandas as pd
import pytest

from lungdx.download import download
from lungdx.errors import LungdxError
from lungdx.sample import sample
from tests.helpers import make_flat_dataset, settings, tree_hashes, write_image, xray

SETTINGS = {"seed": 239, "dataset.classes": [], "sample.per_class": 20, "sample.val_size": 0.1, "sample.test_size": 0.2}


def download_from(source, raw_dir, **changes):
    """The download stage, params.yaml's settings with dataset.source = `source`."""
    return download(settings({"seed": 0, "dataset.source": str(source), **changes}).download, raw_dir)


@pytest.fixture
def raw(tmp_path):
    """A raw tree of three classes, one smaller than per_class, with planted duplicates and bad files."""
    src = make_flat_dataset(tmp_path / "src", {"COVID": 30, "Normal": 25, "Viral Pneumonia": 12})
    # Exact duplicates: inside one class, and across classes.
    shutil.copyfile(src / "COVID" / "COVID-1.png", src / "COVID" / "COVID-dup.png")
    shutil.copyfile(src / "Normal" / "Normal-2.png", src / "Viral Pneumonia" / "copy.png")
    (src / "Normal" / "empty.png").write_bytes(b"")
    (src / "Normal" / "notes.txt").write_text("not an image")
    out = tmp_path / "raw"
    download_from(src, out)
    return out


def run_sample(raw, tmp_path, name="s", **changes):
    """sample with SETTINGS changed by `changes` (seed, or a key of sample: classes, per_class, ...)."""
    changes = {
        key if key == "seed" else ("dataset." if key == "classes" else "sample.") + key: value
        for key, value in changes.items()
    }
    return sample(settings({**SETTINGS, **changes}).sample, raw, tmp_path / name), tmp_path / name


def test_same_seed_gives_a_byte_identical_manifest_and_another_seed_a_different_one(raw, tmp_path):
    _, a = run_sample(raw, tmp_path, "a")
    _, b = run_sample(raw, tmp_path, "b")
    _, c = run_sample(raw, tmp_path, "c", seed=240)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()


def test_counts_are_min_of_per_class_and_available_and_splits_are_stratified(raw, tmp_path):
    manifest, _ = run_sample(raw, tmp_path)
    counts = manifest.groupby("class").size().to_dict()
    # COVID: 31 files, one a duplicate -> 30 usable -> 20; Normal: 25 usable (+2 bad) -> 20;
    # Viral Pneumonia: 13 files, one a copy of a Normal image -> 12 usable, fewer than 20 -> all.
    assert counts == {"COVID": 20, "Normal": 20, "Viral Pneumonia": 12}
    splits = manifest.groupby(["class", "split"]).size().unstack()
    assert splits.loc["COVID"].to_dict() == {"test": 4, "train": 14, "val": 2}
    assert splits.loc["Viral Pneumonia"].to_dict() == {"test": 2, "train": 9, "val": 1}
    assert list(manifest.columns[:6]) == ["path", "class", "label", "split", "sha256", "mask"]


def test_duplicates_are_kept_once_and_never_cross_splits(raw, tmp_path):
    manifest, out = run_sample(raw, tmp_path, per_class=100)
    assert manifest["sha256"].is_unique
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert reasons["COVID/images/COVID-dup.png"] == "exact duplicate of COVID/images/COVID-1.png"
    assert reasons["Viral Pneumonia/images/copy.png"] == "exact duplicate of Normal/images/Normal-2.png"
    assert "empty" in reasons["Normal/images/empty.png"]
    assert "not a decodable image" in reasons["Normal/images/notes.txt"]


def test_unreadable_files_are_warned_about_by_name(raw, tmp_path, capsys):
    run_sample(raw, tmp_path)
    err = capsys.readouterr().err
    assert "skipped" in err and "notes.txt" in err and "empty.png" in err
    assert "class 'Viral Pneumonia' has 12 usable images, fewer than sample.per_class=20" in err


def test_sample_never_changes_the_raw_tree(raw, tmp_path):
    before = tree_hashes(raw)
    run_sample(raw, tmp_path)
    assert tree_hashes(raw) == before


def test_masks_are_paired_by_file_name(tmp_path):
    download_from(
        "synthetic",
        tmp_path / "raw",
        **{"seed": 3, "dataset.synthetic.per_class": 10, "dataset.synthetic.image_size": 64},
    )
    manifest, _ = run_sample(tmp_path / "raw", tmp_path, per_class=10)
    row = manifest.iloc[0]
    assert row["mask"] == row["path"].replace("/images/", "/masks/")
    assert row["lesion"] == row["path"].replace("/images/", "/lesions/")
    assert manifest.groupby("class").size().to_dict() == {
        c: 10 for c in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    }


def test_classes_param_keeps_and_orders_classes(raw, tmp_path):
    manifest, _ = run_sample(raw, tmp_path, classes=["Normal", "COVID"])
    assert manifest.drop_duplicates("class").set_index("class")["label"].to_dict() == {"Normal": 0, "COVID": 1}


def test_unknown_class_name_lists_the_classes_found(raw, tmp_path):
    with pytest.raises(LungdxError, match=r"\['Pneumonia'\].*\['COVID', 'Normal', 'Viral Pneumonia'\]"):
        run_sample(raw, tmp_path, classes=["Normal", "Pneumonia"])


def test_one_class_is_an_error(raw, tmp_path):
    with pytest.raises(LungdxError, match="at least 2 class"):
        run_sample(raw, tmp_path, classes=["Normal"])


def test_class_without_usable_images_is_named(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10})
    (src / "C").mkdir()
    (src / "C" / "readme.txt").write_text("x")
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError, match="class 'C' has no usable image"):
        run_sample(tmp_path / "raw", tmp_path)
    assert len(run_sample(tmp_path / "raw", tmp_path, classes=["A", "B"])[0]) == 20


def test_class_too_small_for_every_split_is_named_with_numbers(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 3})
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError, match=r"class 'B': 3 images give train/val/test = 2/0/1"):
        run_sample(tmp_path / "raw", tmp_path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("per_class", 0, "sample.per_class"),
        ("per_class", -5, "sample.per_class"),
        ("val_size", 0.5, r"sample.val_size \+ sample.test_size"),
        ("test_size", 1.2, "sample.test_size"),
    ],
)
def test_bad_sample_params_fail_naming_the_key(key, value, message):
    changes = {
        "seed": 1,
        "dataset.classes": [],
        "sample.per_class": 10,
        "sample.val_size": 0.1,
        "sample.test_size": 0.5,
        f"sample.{key}": value,
    }
    if key != "val_size":
        changes["sample.test_size"] = value if key == "test_size" else 0.2
    with pytest.raises(LungdxError, match=message):
        settings(changes)


def test_a_16bit_rgb_and_jpeg_mix_is_usable(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        write_image(src / "A" / f"a{i}.png", xray(i).astype("uint16") * 257)
        write_image(src / "B" / f"b{i}.jpg", xray(100 + i))
    download_from(src, tmp_path / "raw")
    manifest, _ = run_sample(tmp_path / "raw", tmp_path)
    assert manifest.groupby("class").size().to_dict() == {"A": 10, "B": 10}


def test_image_bombs_are_warned_about_by_name_skipped_and_listed_and_the_rest_sampled(tmp_path, capsys):
    from lungdx.images import MAX_FILE_BYTES
    from tests.helpers import png_bomb

    raw = tmp_path / "raw"
    for i in range(10):
        write_image(raw / "A" / "images" / f"a{i}.png", xray(i))
        write_image(raw / "B" / "images" / f"b{i}.png", xray(100 + i))
    png_bomb(raw / "A" / "images" / "bomb.png")  # 30000x30000, under 1 MB
    png_bomb(raw / "B" / "masks" / "b0.png", bit_depth=16)  # a bomb as a mask: the image stays, the mask goes
    huge = write_image(raw / "B" / "images" / "huge.png", xray(200))
    with open(huge, "r+b") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse
    manifest, out = run_sample(raw, tmp_path, per_class=20)

    too_big = (
        "too large to decode safely: 30000x30000 is 900,000,000 pixels, over the limit of 36,000,000 "
        "(lungdx.images.MAX_PIXELS, a longest side of 6000); downscale it first"
    )
    err = capsys.readouterr().err
    assert f"warning: skipped {raw / 'A/images/bomb.png'}: {too_big}" in err
    assert f"warning: skipped {raw / 'B/images/huge.png'}: file too large to read safely" in err
    reasons = dict(pd.read_csv(out / "skipped.csv").itertuples(index=False))
    assert reasons == {
        "A/images/bomb.png": too_big,
        "B/masks/b0.png": "unusable mask: " + too_big,
        "B/images/huge.png": reasons["B/images/huge.png"],
    }
    assert "over the limit of 256 MiB (lungdx.images.MAX_FILE_BYTES)" in reasons["B/images/huge.png"]
    assert manifest.groupby("class").size().to_dict() == {"A": 10, "B": 10}
    assert manifest.loc[manifest["path"] == "B/images/b0.png", "mask"].item() == ""


def test_files_the_download_skipped_are_listed_in_skipped_csv_as_source_paths(tmp_path, capsys):
    import os

    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10})
    (src / "A" / "dangling.png").symlink_to("gone.png")
    os.mkfifo(src / "B" / "pipe.png")
    write_image(src / "A" / "bad.png", xray(0)).write_bytes(b"")  # skipped by sample, not by download
    download_from(src, tmp_path / "raw")
    _, out = run_sample(tmp_path / "raw", tmp_path, per_class=10)
    rows = list(pd.read_csv(out / "skipped.csv").itertuples(index=False, name=None))
    assert rows[:2] == [
        ("source:A/dangling.png", "dangling symbolic link (its target gone.png does not exist)"),
        ("source:B/pipe.png", "named pipe (FIFO), not a regular file"),
    ]
    assert [path for path, _ in rows[2:]] == ["A/images/bad.png"]  # raw paths keep their form
    assert "the download stage skipped 2 file(s) of the dataset's source" in capsys.readouterr().err


def test_a_source_json_that_is_not_the_download_record_is_one_clear_line(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10})
    download_from(src, tmp_path / "raw")
    (tmp_path / "raw" / "source.json").write_text('{"skipped": [{"reason": "no path"}]}')
    with pytest.raises(LungdxError, match=r"source.json: not the record the download stage writes \(KeyError"):
        run_sample(tmp_path / "raw", tmp_path)


def test_a_class_folder_name_with_control_characters_is_refused_by_name(tmp_path):
    from lungdx.errors import LungdxError
    from lungdx.sample import find_classes

    for name in ("COVID", "Normal\nerror: forged", "\x1b[31mRed"):
        (tmp_path / name).mkdir()
    with pytest.raises(LungdxError, match=r"control characters: \['\\x1b\[31mRed', 'Normal\\nerror: forged'\]"):
        find_classes(tmp_path, (), "dataset.classes")


def test_empty_tiny_or_misshapen_lung_masks_are_dropped_and_listed_and_0_1_masks_kept(tmp_path):
    """sample screens lung masks so prepare.lung_mask crop/mask never cuts an image to nothing, and
    lists each dropped mask with its reason; the image stays (without its mask)."""
    from tests.helpers import make_kaggle_dataset, write_image

    src = make_kaggle_dataset(tmp_path / "src", {"A": 4, "B": 4}, size=64)
    write_image(src / "A" / "masks" / "A-1.png", np.zeros((64, 64), np.uint8))  # empty
    tiny = np.zeros((64, 64), np.uint8)
    tiny[10, 10] = 255
    write_image(src / "A" / "masks" / "A-2.png", tiny)  # one pixel
    write_image(src / "B" / "masks" / "B-1.png", np.full((2000, 20), 255, np.uint8))  # a strip
    zero_one = np.zeros((64, 64), np.uint8)
    zero_one[16:48, 8:32] = 1
    write_image(src / "B" / "masks" / "B-2.png", zero_one)  # 0/1: kept
    download_from(src, tmp_path / "raw")
    manifest = sample(
        settings(
            {"seed": 0, "dataset.classes": [], "sample.per_class": 4, "sample.val_size": 0.25, "sample.test_size": 0.25}
        ).sample,
        tmp_path / "raw",
        tmp_path / "out",
    )
    reasons = dict(pd.read_csv(tmp_path / "out" / "skipped.csv").values)
    assert reasons["A/masks/A-1.png"] == "unusable mask: empty (no lung pixel): no lungs to cut the image to"
    assert reasons["A/masks/A-2.png"].startswith("unusable mask: covers 0.02% of the image, under 1%")
    assert reasons["B/masks/B-1.png"].startswith("unusable mask: 20x2000, not the shape of its 64x64 image")
    masks = dict(zip(manifest["path"], manifest["mask"], strict=True))
    assert masks["A/images/A-1.png"] == masks["B/images/B-1.png"] == ""
    assert masks["B/images/B-2.png"] == "B/masks/B-2.png" and len(manifest) == 8
