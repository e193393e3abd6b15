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
    # COVID: 31 files, one a duplicate -> 30 usable -> 20; Normal: 25 images (+2 bad), one also in
    # Viral Pneumonia -> 24 usable -> 20; Viral Pneumonia: 13 files, one that Normal image -> 12 usable,
    # fewer than 20 -> all.
    assert counts == {"COVID": 20, "Normal": 20, "Viral Pneumonia": 12}
    splits = manifest.groupby(["class", "split"]).size().unstack()
    assert splits.loc["COVID"].to_dict() == {"test": 4, "train": 14, "val": 2}
    assert splits.loc["Viral Pneumonia"].to_dict() == {"test": 2, "train": 9, "val": 1}
    assert list(manifest.columns[:6]) == ["path", "class", "label", "split", "sha256", "mask"]


def test_duplicates_are_kept_once_and_never_cross_splits(raw, tmp_path, capsys):
    manifest, out = run_sample(raw, tmp_path, per_class=100)
    assert manifest["sha256"].is_unique
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert reasons["COVID/images/COVID-dup.png"] == "exact duplicate of COVID/images/COVID-1.png"
    # The same image in two classes: which label is right is unknown, so it is left out of both.
    conflict = "label conflict: the same image as {}; left out of every class it is in"
    assert reasons["Normal/images/Normal-2.png"] == conflict.format("Viral Pneumonia/images/copy.png")
    assert reasons["Viral Pneumonia/images/copy.png"] == conflict.format("Normal/images/Normal-2.png")
    assert not {"Normal/images/Normal-2.png", "Viral Pneumonia/images/copy.png"} & set(manifest["path"])
    assert "COVID/images/COVID-1.png" in set(manifest["path"])
    assert (
        "warning: 2 files left out for a label conflict: the same image in two classes (e.g. "
        "Normal/images/Normal-2.png: the same image as Viral Pneumonia/images/copy.png; left out of every "
        f"class it is in); the list is in {out / 'skipped.csv'}: remove each copy from the class it does not "
        "belong to"
    ) in capsys.readouterr().err
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
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path)
    assert str(err.value) == (
        f"class 'B' has 3 usable images in {tmp_path / 'raw' / 'B' / 'images'}: train/val/test = 2/0/1 with "
        "sample.val_size=0.1 and sample.test_size=0.2; every split needs at least one image of each class, "
        "so at least 6 images per class with these shares: add images to the class in the dataset's source, "
        "or leave it out with dataset.classes, or change the split sizes"
    )
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_class_with_one_image_is_refused_naming_the_minimum_and_nothing_is_written(tmp_path, capsys):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 1})
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path)
    # One image can go to one split only: no split sizes help, so none are suggested.
    assert str(err.value) == (
        f"class 'B' has 1 usable image in {tmp_path / 'raw' / 'B' / 'images'}: train/val/test = 1/0/0 with "
        "sample.val_size=0.1 and sample.test_size=0.2; every split needs at least one image of each class, "
        "so at least 6 images per class with these shares: add images to the class in the dataset's source, "
        "or leave it out with dataset.classes"
    )
    assert "class 'B' has 1 usable image, fewer than sample.per_class=20" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("n, ok", [(5, False), (6, True)])
def test_the_minimum_class_size_is_exact(tmp_path, n, ok):
    """With val 0.1 and test 0.2, 5 images give val round(0.5) = 0 (round half to even); 6 give 4/1/1."""
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": n})
    download_from(src, tmp_path / "raw")
    if not ok:
        with pytest.raises(LungdxError, match=r"class 'B' has 5 usable images .*= 4/0/1 .* at least 6 images"):
            run_sample(tmp_path / "raw", tmp_path)
        return
    manifest, _ = run_sample(tmp_path / "raw", tmp_path)
    assert manifest[manifest["class"] == "B"].groupby("split").size().to_dict() == {"test": 1, "train": 4, "val": 1}


def test_min_class_size_is_the_first_size_giving_every_split_an_image():
    from lungdx.sample import min_class_size, split_counts

    for val, test in [(0.1, 0.2), (0.15, 0.15), (0.01, 0.3), (0.45, 0.45), (0.2, 0.7999)]:
        need = min_class_size(val, test)
        assert need is not None and min(split_counts(need, val, test)) >= 1, (val, test)
        assert all(min(split_counts(n, val, test)) < 1 for n in range(1, need)), (val, test)
    assert min_class_size(0.1, 0.2) == 6 and min_class_size(0.25, 0.25) == 3


def test_a_per_class_too_small_for_the_splits_says_to_raise_it(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 10})
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path, per_class=4)
    assert str(err.value) == (
        "sample.per_class=4 gives class 'A' train/val/test = 3/0/1 with sample.val_size=0.1 and "
        "sample.test_size=0.2; every split needs at least one image of each class, so at least 6 images "
        "per class with these shares: raise sample.per_class to 6 or more"
    )


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


def test_a_class_whose_images_are_all_copies_of_another_class_says_so_and_writes_nothing(tmp_path, capsys):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 5})
    for i in range(1, 6):  # every image of B is an exact copy of one of A
        shutil.copyfile(src / "A" / f"A-{i}.png", src / "B" / f"B-{i}.png")
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path)
    assert str(err.value) == (
        f"class 'B' has no usable image in {tmp_path / 'raw' / 'B' / 'images'}: all 5 of its files were left "
        "out (5 also in another class (label conflict; e.g. B/images/B-1.png is the same image as "
        "A/images/A-1.png)), each named in a warning above; remove each copy from the class it does not "
        "belong to, or leave the class out with dataset.classes"
    )
    warnings = capsys.readouterr().err
    assert f"warning: skipped {tmp_path / 'raw' / 'B' / 'images' / 'B-3.png'}: label conflict" in warnings
    assert f"warning: skipped {tmp_path / 'raw' / 'A' / 'images' / 'A-3.png'}: label conflict" in warnings
    assert not (tmp_path / "s").exists()


def test_a_class_whose_files_are_all_unreadable_says_so(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 10, "B": 3})
    for f in (src / "B").iterdir():
        f.write_bytes(f.read_bytes()[:50])  # truncated
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path)
    assert str(err.value).startswith(
        f"class 'B' has no usable image in {tmp_path / 'raw' / 'B' / 'images'}: all 3 of its files were left "
        "out (3 unreadable (e.g. B/images/B-1.png: not a decodable image"
    )
    assert str(err.value).endswith(
        "each named in a warning above; replace the unreadable files, or leave the class out with dataset.classes"
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "names, shown",
    [(["COVID", "covid", "Normal"], "'COVID' and 'covid'"), (["Normal", "Normal ", "COVID"], "'Normal' and 'Normal '")],
)
def test_class_folders_that_differ_only_in_case_or_spaces_are_refused_naming_both(tmp_path, names, shown):
    src = make_flat_dataset(tmp_path / "src", dict.fromkeys(names, 10))
    download_from(src, tmp_path / "raw")
    assert shown.split(" and ")[1].strip("'") in {p.name for p in (tmp_path / "raw").iterdir()}  # kept apart
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'raw'}: class folders {shown} differ only in case or spaces: merge them into one folder "
        "if they are one class, or rename one if they are two (in the dataset's source, then dvc repro -f "
        "download)"
    )
    assert not (tmp_path / "s").exists()


def test_look_alike_names_ignore_case_unicode_form_and_spaces_only():
    from lungdx.sample import look_alikes

    names = ["COVID", "covid", " Viral  Pneumonia", "Viral Pneumonia", "Caf\u00e9", "Cafe\u0301", "Normal", "Normal_"]
    assert look_alikes(names) == [
        ["COVID", "covid"],
        [" Viral  Pneumonia", "Viral Pneumonia"],
        ["Caf\u00e9", "Cafe\u0301"],
    ]


@pytest.mark.parametrize(
    "classes, message",
    [
        (
            ["COVID", "Normal "],
            "params.yaml: dataset.classes = ['COVID', 'Normal '] is not allowed: a list of class folder names "
            "without a space at either end, as 'Normal'; if the folder is named 'Normal ', rename it (in the "
            "dataset's source) to 'Normal'",
        ),
        (
            ["COVID", "Normal", "covid"],
            "params.yaml: dataset.classes = ['COVID', 'Normal', 'covid'] is not allowed: a list of distinct "
            "classes; 'COVID' and 'covid' differ only in case or spaces: keep the one that is the folder's name "
            "(if both folders exist, merge or rename them)",
        ),
    ],
)
def test_dataset_classes_with_spaces_at_an_end_or_look_alike_names_are_refused(classes, message):
    with pytest.raises(LungdxError) as err:
        settings({**SETTINGS, "dataset.classes": classes})
    assert str(err.value) == message


def test_dataset_classes_missing_a_folder_by_case_or_spaces_names_the_folder(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"COVID": 10, "normal ": 10})
    download_from(src, tmp_path / "raw")
    with pytest.raises(LungdxError) as err:
        run_sample(tmp_path / "raw", tmp_path, classes=["COVID", "Normal"])
    assert str(err.value) == (
        f"params.yaml: dataset.classes names ['Normal'] which the dataset does not have; classes found in "
        f"{tmp_path / 'raw'}: ['COVID', 'normal ']; the folder 'normal ' differs from 'Normal' only in case "
        "or spaces: write its name exactly, or rename the folder"
    )


def test_dataset_classes_leaving_out_a_look_alike_folder_warns(tmp_path, capsys):
    src = make_flat_dataset(tmp_path / "src", {"COVID": 10, "covid": 10, "Normal": 10})
    download_from(src, tmp_path / "raw")
    manifest, _ = run_sample(tmp_path / "raw", tmp_path, classes=["COVID", "Normal"])
    assert sorted(manifest["class"].unique()) == ["COVID", "Normal"]
    assert (
        "warning: dataset.classes leaves out the class folder 'covid', which differs from 'COVID' only in case "
        "or spaces: its images are not used; if they are one class, merge the folders in the dataset's source"
    ) in capsys.readouterr().err


@pytest.mark.parametrize("per_class, warned", [(100, True), (18, True), (17, False)])
def test_classes_imbalanced_after_sampling_are_warned_about_with_both_counts(tmp_path, capsys, per_class, warned):
    """A: 60 images, B: 6 (10x): per_class 100 keeps 60/6, 18 keeps 18/6 (3x, warned), 17 keeps 17/6."""
    src = make_flat_dataset(tmp_path / "src", {"A": 60, "B": 6})
    download_from(src, tmp_path / "raw")
    manifest, out = run_sample(tmp_path / "raw", tmp_path, per_class=per_class)
    big = min(60, per_class)
    assert manifest.groupby("class").size().to_dict() == {"A": big, "B": 6}  # at most per_class each
    line = (
        f"warning: class 'A' has {big} images and class 'B' 6 after sampling ({big / 6:.1f}x): a model trained "
        "on them leans towards the larger classes; set models.cnn.balanced_batches: true (each training batch "
        f"draws the classes equally), or cap every class with a lower sample.per_class (now {per_class})"
    )
    err = capsys.readouterr().err
    assert (line in err) == warned and ("after sampling" in err) == warned
    assert (out / "manifest.csv").is_file()  # a warning, not an error
