"""The segment stage (lungdx.segment, lungdx.lungs): the lungs learned from masks, drawn where an
image has none, scored, listed by origin; and each bad input answered in one line, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lungdx.errors import LungdxError
from lungdx.images import read_gray
from lungdx.lungs import lung_problem, lungs_from_probabilities, overlap
from lungdx.segment import MIN_MASKS, MIN_VAL_DICE, segment
from lungdx.splits import LUNG_MASKS, SEGMENTER_FILE
from tests.helpers import ROOT, make_flat_dataset, settings, write_image

QUICK = {
    "segment.image_size": 64,
    "segment.epochs": 15,
    "segment.batch_size": 8,
    "segment.patience": 15,
    "segment.filters": [8, 16, 32, 64],
}


def synthetic_raw(root: Path, per_class: int = 20, size: int = 64) -> Path:
    from lungdx.synthetic import generate_dataset

    generate_dataset(root, per_class, seed=5, size=size, workers=1)
    return root


def sampled(raw: Path, out: Path, **changes) -> Path:
    from lungdx.sample import sample

    sample(settings({"sample.per_class": 1000, **changes}).sample, raw, out)
    return out / "manifest.csv"


def run_segment(root: Path, manifest: Path, raw: Path, **changes) -> dict:
    s = settings({"prepare.lung_mask": "crop", **QUICK, **changes}).segment
    return segment(
        s,
        manifest,
        raw,
        root / "segmented",
        root / "segment.json",
        root / "segment_details.json",
        root / "segment_images",
        project_root=ROOT,
    )


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """The stage under crop on synthetic images, COVID's masks taken away: 60 masks to learn from,
    20 images for the segmenter to draw."""
    root = tmp_path_factory.mktemp("segment")
    raw = synthetic_raw(root / "raw")
    shutil.rmtree(raw / "COVID" / "masks")
    manifest = sampled(raw, root / "sampled")
    meta = run_segment(root, manifest, raw)
    return root, raw, manifest, meta


def test_the_segmenter_learns_the_lungs_and_draws_those_without_a_mask(learned):
    root, raw, manifest, meta = learned
    metrics = json.loads((root / "segment.json").read_text())
    assert metrics["dice"] >= 0.75 and metrics["dice_ci"]["lower"] <= metrics["dice"] <= metrics["dice_ci"]["upper"]
    assert 0 < metrics["iou"] < metrics["dice"] and metrics["n_test"] == 12  # 0.2 of 60 masked images
    rows = pd.read_csv(root / "segmented" / LUNG_MASKS, keep_default_na=False)
    paths = pd.read_csv(manifest)["path"]
    assert sorted(rows["path"]) == sorted(paths)  # every sampled image has a lung mask, and says whose
    covid = rows[rows["path"].str.startswith("COVID/")]
    assert set(covid["origin"]) <= {"segmenter", "whole"} and set(
        rows.loc[~rows.index.isin(covid.index), "origin"]
    ) == {"dataset"}
    for row in covid.itertuples():
        drawn = read_gray(root / "segmented" / row.mask)
        assert drawn.shape == read_gray(raw / row.path).shape and set(np.unique(drawn)) <= {0, 255}
    assert meta["counts"] == {
        "dataset": 60,
        "segmenter": int((covid["origin"] == "segmenter").sum()),
        "whole": int((covid["origin"] == "whole").sum()),
        "none": 0,
    }
    assert meta["counts"]["segmenter"] >= 15  # synthetic lungs are easy: nearly every drawing is plausible
    implausible = pd.read_csv(root / "segmented" / "implausible.csv", keep_default_na=False)
    assert sorted(implausible["path"]) == sorted(covid.loc[covid["origin"] == "whole", "path"])
    assert meta["segmenter"]["learned_from"] == "dataset.source" and meta["segmenter"]["test_dice"] == metrics["dice"]
    pictures = sorted(p.name for p in (root / "segment_images").iterdir())
    assert [p for p in pictures if p.startswith("test_")] == [f"test_{k}.png" for k in range(1, 7)]
    assert len([p for p in pictures if p.startswith("drawn_")]) == 6
    details = json.loads((root / "segment_details.json").read_text())
    assert len(details["test"]["per_image"]) == 12 and details["history"]["val_dice"] >= MIN_VAL_DICE


def test_the_segmenter_file_draws_the_same_lungs_again(learned):
    from lungdx.lungs import draw_lungs
    from lungdx.model_file import load_segmenter_file

    root, raw, _, _ = learned
    rows = pd.read_csv(root / "segmented" / LUNG_MASKS, keep_default_na=False)
    row = rows[rows["origin"] == "segmenter"].iloc[0]
    again = draw_lungs(load_segmenter_file(root / "segmented" / SEGMENTER_FILE), [read_gray(raw / row["path"])])[0]
    assert overlap(again, read_gray(root / "segmented" / row["mask"]))[0] > 0.99


def test_under_none_nothing_is_learned_and_tensorflow_never_starts(tmp_path):
    raw = synthetic_raw(tmp_path / "raw", per_class=10)
    manifest = sampled(raw, tmp_path / "sampled")
    code = (
        "import sys; from pathlib import Path; from tests.helpers import settings\n"
        "from lungdx.segment import segment\n"
        f"root = Path({str(tmp_path)!r})\n"
        "meta = segment(settings({'prepare.lung_mask': 'none'}).segment, root / 'sampled' / 'manifest.csv', "
        "root / 'raw', root / 'segmented', root / 'm.json', root / 'd.json', root / 'pics')\n"
        "print(meta['counts']['dataset'], 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(len(pd.read_csv(manifest))), "False"]
    assert json.loads((tmp_path / "m.json").read_text()) == {}
    assert not (tmp_path / "segmented" / SEGMENTER_FILE).exists() and not any((tmp_path / "pics").iterdir())
    rows = pd.read_csv(tmp_path / "segmented" / LUNG_MASKS, keep_default_na=False)
    assert set(rows["origin"]) == {"dataset"} and all((raw / m).is_file() for m in rows["mask"])


def assert_refused(tmp_path, manifest, raw, *words, **changes):
    with pytest.raises(LungdxError) as err:
        run_segment(tmp_path, manifest, raw, **changes)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    for out in ("segmented", "segment.json", "segment_details.json", "segment_images"):
        assert not (tmp_path / out).exists(), out  # nothing half-written
    return message


@pytest.fixture
def flat_source(tmp_path):
    """A source without masks, sampled: the case segment.train_source is for."""
    from lungdx.download import download

    source = make_flat_dataset(tmp_path / "flat", {"COVID": 10, "Normal": 10})
    download(settings({"dataset.source": str(source)}).download, tmp_path / "raw")
    return tmp_path / "raw", sampled(tmp_path / "raw", tmp_path / "sampled")


def test_a_source_without_masks_and_no_train_source_names_both_keys(tmp_path, flat_source):
    assert_refused(tmp_path, flat_source[1], flat_source[0], "prepare.lung_mask", "segment.train_source", "none")


def masked_source(root: Path, n: int, mask=None) -> Path:
    """A Kaggle-layout source of n synthetic images, each with a lung mask (mask(i, image) if given)."""
    from lungdx.synthetic import generate_image

    for i in range(n):
        img, lung, _ = generate_image(11, "Normal", i, 64)
        write_image(root / "Normal" / "images" / f"n{i}.png", img)
        write_image(root / "Normal" / "masks" / f"n{i}.png", lung if mask is None else mask(i, img))
    return root


def test_a_train_source_with_too_few_masks_says_how_many_are_needed(tmp_path, flat_source):
    source = masked_source(tmp_path / "few", MIN_MASKS - 1)
    message = assert_refused(
        tmp_path,
        flat_source[1],
        flat_source[0],
        f"{MIN_MASKS - 1} image(s)",
        f"at least {MIN_MASKS}",
        **{"segment.train_source": str(source)},
    )
    assert str(source) in message


@pytest.mark.parametrize("bad", ["grey", "wrong_shape"])
def test_unusable_masks_are_named_and_do_not_count(tmp_path, flat_source, bad):
    """A photo given as a mask (grey, not black and white) or a mask of another shape than its
    image is not used: with all of them bad, too few remain, and the first is named with why."""

    def mask(i, img):
        return img if bad == "grey" else np.full((64, 32), 255, np.uint8)

    source = masked_source(tmp_path / "bad", MIN_MASKS, mask)
    message = assert_refused(
        tmp_path, flat_source[1], flat_source[0], "0 image(s)", "unusable", **{"segment.train_source": str(source)}
    )
    assert ("not black and white" if bad == "grey" else "another aspect ratio") in message


@pytest.mark.parametrize(
    "inside, words",
    [
        ("data", "contains data/raw, an output of this pipeline"),
        (".", "the project itself"),
        (".git", "git's own folder"),
    ],
)
def test_a_train_source_where_the_pipeline_keeps_its_own_files_is_refused(tmp_path, flat_source, inside, words):
    """As for dataset.source (lungdx.source_checks): the project, its outputs, .dvc/ and .git/."""
    assert_refused(
        tmp_path,
        flat_source[1],
        flat_source[0],
        "segment.train_source =",
        words,
        **{"segment.train_source": str((ROOT / inside).resolve())},
    )


def test_a_segmenter_that_learned_nothing_is_not_saved(tmp_path, flat_source):
    """Masks that are noise, not lungs: no drawing matches them on val, so the stage stops."""
    source = masked_source(
        tmp_path / "noise", 60, lambda i, img: (np.random.default_rng(i).random((64, 64)) > 0.9).astype(np.uint8) * 255
    )
    assert_refused(
        tmp_path,
        flat_source[1],
        flat_source[0],
        "learned nothing",
        f"under {MIN_VAL_DICE}",
        "no segmenter was saved",
        **{"segment.train_source": str(source), "segment.epochs": 2},
    )


def test_implausible_drawings_are_told_apart_from_lungs():
    lungs = np.zeros((100, 100), np.uint8)
    lungs[20:80, 15:45] = lungs[20:80, 55:85] = 255
    assert lung_problem(lungs) == ""
    one = lungs.copy()
    one[:, 50:] = 0
    assert "one lung" in lung_problem(one)
    assert "no lungs" in lung_problem(np.zeros_like(lungs))
    sliver = np.zeros_like(lungs)
    sliver[40:45, 10:20] = sliver[40:45, 80:90] = 255
    assert "sliver" in lung_problem(sliver)
    assert "most of the image" in lung_problem(np.full_like(lungs, 255))


def test_a_square_output_comes_back_at_the_image_s_own_shape_without_specks():
    probability = np.zeros((64, 64), np.float32)
    probability[16:48, 8:28] = probability[16:48, 36:56] = 0.9
    probability[2, 2] = 0.9  # a speck: the third region, dropped
    mask = lungs_from_probabilities(probability, (128, 96))  # a portrait image, padded left and right
    assert mask.shape == (128, 96) and set(np.unique(mask)) == {0, 255}
    assert mask[0:8, 0:8].max() == 0 and lung_problem(mask) == ""


@pytest.mark.slow
def test_dvc_exp_run_learns_the_lungs_from_a_train_source_for_a_source_without_masks(project, tmp_path):
    """The issue's command, with real dvc: a flat source without masks, lung focus crop, the lungs
    learned from another dataset; the model then finds the lungs itself in lungdx predict."""
    from lungdx.synthetic import generate_image
    from tests.helpers import run, stages_run

    masked = synthetic_raw(tmp_path / "masked")  # 80 synthetic X-rays with lung masks
    flat = tmp_path / "flat"
    for cls in ("COVID", "Normal"):
        for i in range(12):
            write_image(flat / cls / f"{cls}-{i + 1}.png", generate_image(17, cls, i, 64)[0])
    run(["dvc", "repro"], project)  # the default: lung_mask none, nothing learned
    assert json.loads((project / "metrics" / "segment.json").read_text()) == {}
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "default run"], project)
    sets = {
        "dataset.source": flat,
        "prepare.lung_mask": "crop",
        "segment.train_source": masked,
        **{k: v for k, v in QUICK.items() if k != "segment.filters"},
    }
    out = run(
        ["dvc", "exp", "run", "-n", "lungs", *[a for k, v in sets.items() for a in ("-S", f"{k}={v}")]], project
    ).stdout
    assert {"segment", "prepare", "train"} <= set(stages_run(out))
    metrics = json.loads((project / "metrics" / "segment.json").read_text())
    assert metrics["dice"] >= 0.75 and metrics["masks"]["dataset"] == 0
    assert metrics["masks"]["segmenter"] + metrics["masks"]["whole"] == 24
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert '"metrics/segment.json"' in json.dumps(shown) and '"dice"' in json.dumps(shown)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    assert any("reports/segment_images/test_1.png" in name for name in plots), list(plots)[:20]
    info = json.loads(run([sys.executable, "-m", "lungdx", "info", "--json", "models/model.keras"], project).stdout)
    assert info["segmenter"]["learned_from"] == str(masked) and info["input"]["lung_mask"] == "crop"
    found = json.loads(
        run(
            [
                sys.executable,
                "-m",
                "lungdx",
                "predict",
                "-q",
                "--json",
                "--model",
                "models/model.keras",
                str(flat / "COVID" / "COVID-1.png"),
            ],
            project,
        ).stdout
    )
    assert found[0]["lungs"] in {"drawn", "whole"} and "predicted" in found[0]


@pytest.mark.slow  # a U-Net trained: about 30 s on 2 cores
def test_under_none_a_train_source_still_teaches_the_lungs_drawn_for_scoring_while_prepare_keeps_whole_xrays(
    tmp_path,
):
    """prepare.lung_mask none with segment.train_source: the lungs are learned and drawn (for the
    Grad-CAM lung share), and prepare carries them in masks.npy beside the whole, uncut X-rays."""
    from lungdx.download import download
    from lungdx.images import prepare_image
    from lungdx.prepare import prepare
    from lungdx.synthetic import generate_image

    flat = tmp_path / "flat"  # a source without masks, of X-rays like the masked ones
    for cls in ("COVID", "Normal"):
        for i in range(10):
            write_image(flat / cls / f"{cls}-{i + 1}.png", generate_image(17, cls, i, 64)[0])
    download(settings({"dataset.source": str(flat)}).download, tmp_path / "raw")
    raw, manifest = tmp_path / "raw", sampled(tmp_path / "raw", tmp_path / "sampled")
    masked = synthetic_raw(tmp_path / "masked", per_class=15)  # 60 masked X-rays to learn from
    meta = run_segment(tmp_path, manifest, raw, **{"prepare.lung_mask": "none", "segment.train_source": str(masked)})
    assert meta["lung_mask"] == "none" and meta["segmenter"]["learned_from"] == str(masked)
    assert meta["counts"]["segmenter"] >= 15 and meta["counts"]["segmenter"] + meta["counts"]["whole"] == 20
    assert json.loads((tmp_path / "segment.json").read_text())["dice"] >= 0.75
    rows = pd.read_csv(tmp_path / "segmented" / LUNG_MASKS, keep_default_na=False)
    assert sorted(rows["path"]) == sorted(pd.read_csv(manifest)["path"]) and set(rows["origin"]) <= {
        "segmenter",
        "whole",
    }

    prepared = prepare(
        settings({"prepare.lung_mask": "none", "prepare.image_size": 32}).prepare,
        manifest,
        raw,
        tmp_path / "segmented",
        tmp_path / "prepared",
    )
    assert prepared["has"]["masks"] and prepared["lung_masks"]["dataset"] == 0
    test = pd.read_csv(manifest).query("split == 'test'")
    images = np.load(tmp_path / "prepared" / "test" / "images.npy")
    lungs = np.load(tmp_path / "prepared" / "test" / "masks.npy")
    for k, path in enumerate(test["path"]):
        np.testing.assert_array_equal(images[k], prepare_image(raw / path, 32, "none")[0])  # whole, not cut
        assert 0.1 < (lungs[k] > 0).mean() < 0.9  # the drawn lungs, at the whole image's place
