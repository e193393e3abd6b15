"""`python -m lungdx predict`: any PNG or JPEG in, probabilities out; a bad file never stops the rest."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from lungdx.images import PREPROCESSING, load_for_model
from tests.helpers import ROOT, settings, shared, write_image


def predict(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the library from this checkout, whatever cwd is
    return subprocess.run(
        [sys.executable, "-m", "lungdx", "predict", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same X-ray as gray, RGB, RGBA, 16-bit PNG and JPEG, at 299 px, plus a corrupt file."""
    from lungdx.synthetic import generate_image

    d = tmp_path_factory.mktemp("inputs")
    gray = cv2.resize(generate_image(9, "Lung_Opacity", 0, 256)[0], (299, 299))
    files = {
        "gray": write_image(d / "gray.png", gray),
        "rgb": write_image(d / "rgb.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)),
        "rgba": write_image(d / "rgba.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)),
        "16bit": write_image(d / "deep.png", gray.astype(np.uint16) * 257),
        "jpeg": write_image(d / "photo.jpg", gray),
    }
    corrupt = d / "corrupt.png"
    corrupt.write_bytes(files["gray"].read_bytes()[:300])
    files["corrupt"] = corrupt
    return files


@pytest.mark.slow
def test_every_form_gets_the_same_prediction_and_a_bad_file_is_named(tiny_run, inputs, tmp_path):
    order = ["gray", "rgb", "corrupt", "rgba", "16bit", "jpeg"]
    proc = predict(
        *[inputs[k] for k in order],
        "--model",
        tiny_run / "models" / "model.keras",
        "--json",
        "--gradcam",
        tmp_path / "cams",
    )
    assert proc.returncode == 1, "a failed file makes the exit status non-zero"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {inputs['corrupt']}: not a decodable image (truncated, corrupt or not an image)"]
    results = json.loads(proc.stdout)
    assert [r["path"] for r in results] == [str(inputs[k]) for k in order]
    good = [r for r in results if "error" not in r]
    assert len(good) == 5
    probs = np.array([list(r["probabilities"].values()) for r in good])
    np.testing.assert_allclose(probs[:4], np.repeat(probs[:1], 4, axis=0), atol=1e-6)  # lossless forms agree
    np.testing.assert_allclose(probs[4], probs[0], atol=0.05)  # JPEG is lossy
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in good)
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(
        f"{inputs[k].stem}.gradcam.png" for k in order if k != "corrupt"
    )


def test_preprocessing_is_exactly_the_training_one(tiny_run, inputs):
    from lungdx.arrays import predict as predict_probs
    from lungdx.model_file import load_model

    model, info = load_model(tiny_run / "models" / "model.keras")
    expected = predict_probs(model, load_for_model(inputs["gray"], info["image_size"], "none")[None])[0]
    proc = predict(inputs["gray"], "--model", tiny_run / "models" / "model.keras", "--json")
    got = list(json.loads(proc.stdout)[0]["probabilities"].values())
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_real_kaggle_layout_images_get_a_table(tiny_run):
    images = sorted(shared("cxr-kaggle-layout").glob("*/images/*.png"))
    assert len(images) == 4
    proc = predict(*images, "--model", tiny_run / "models" / "model.keras")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["image", "predicted"] and "Viral Pneumonia" in lines[0]
    assert len(lines) == 5 and all(str(p) in out for p, out in zip(images, lines[1:], strict=True))


def test_a_missing_model_is_one_clear_line(tmp_path, inputs):
    proc = predict(inputs["gray"], "--model", tmp_path / "nowhere" / "model.keras")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "dvc repro train" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_model_file_alone_is_enough_to_predict(tiny_run, inputs, tmp_path):
    # What `dvc artifacts get` or a copy delivers: one .keras file, nothing beside it, run from elsewhere.
    lonely = tmp_path / "elsewhere" / "classifier-v1.keras"
    lonely.parent.mkdir()
    shutil.copy(tiny_run / "models" / "model.keras", lonely)
    here = predict(inputs["gray"], "--model", tiny_run / "models" / "model.keras", "--json")
    there = predict(inputs["gray"], "--model", lonely, "--json", cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout)[0]["probabilities"] == json.loads(here.stdout)[0]["probabilities"]
    # The file says what it needs: class names in output order, input size, how pixels are prepared.
    with zipfile.ZipFile(lonely) as archive:
        info = json.loads(archive.read("lungdx.json"))
    assert info["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert info["image_size"] == 48 and info["input"]["preprocessing"] == PREPROCESSING


def test_a_folder_or_a_foreign_keras_file_as_model_is_one_clear_line(tiny_run, inputs, tmp_path):
    folder = predict(inputs["gray"], "--model", tiny_run / "models")
    assert folder.returncode == 2 and f"error: {tiny_run / 'models'}: is a folder; give the model file" in folder.stderr
    foreign = tmp_path / "plain.keras"  # a Keras model file that lungdx did not save
    with zipfile.ZipFile(tiny_run / "models" / "model.keras") as src, zipfile.ZipFile(foreign, "w") as dst:
        for entry in src.namelist():
            if entry != "lungdx.json":
                dst.writestr(entry, src.read(entry))
    proc = predict(inputs["gray"], "--model", foreign)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {foreign}: a Keras file without lungdx's lungdx.json" in proc.stderr


def with_info(src, dest, info_bytes):
    """A copy of model file `src` whose lungdx.json is replaced by `info_bytes`."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as new:
        for entry in old.namelist():
            if entry != "lungdx.json":
                new.writestr(entry, old.read(entry))
        new.writestr("lungdx.json", info_bytes)
    return dest


DAMAGED = {
    "a_list": (lambda info: [info], "damaged (not a JSON object)"),
    "no_classes": (lambda info: {k: v for k, v in info.items() if k != "classes"}, "damaged (classes must be"),
    "size_as_text": (lambda info: {**info, "image_size": "48"}, "damaged (image_size must be an integer"),
    "three_names_for_four_outputs": (
        lambda info: {**info, "classes": info["classes"][:3]},
        "gives 4 outputs, but its lungdx.json says (48, 48, 1) and 3 classes",
    ),
    "another_input_size": (
        lambda info: {**info, "image_size": 64},
        "its network takes (48, 48, 1) and gives 4 outputs, but its lungdx.json says (64, 64, 1)",
    ),
    "unknown_preprocessing": (
        lambda info: {**info, "input": {**info["input"], "preprocessing": "rgb-v9"}},
        "made for input preprocessing 'rgb-v9'",
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_model_metadata_is_one_clear_error_not_a_wrong_answer(tiny_run, tmp_path, case):
    from lungdx.errors import LungdxError
    from lungdx.model_file import load_model

    source = tiny_run / "models" / "model.keras"
    with zipfile.ZipFile(source) as archive:
        info = json.loads(archive.read("lungdx.json"))
    change, message = DAMAGED[case]
    damaged = with_info(source, tmp_path / "damaged.keras", json.dumps(change(info)))
    with pytest.raises(LungdxError, match=re.escape(message)):
        load_model(damaged)


def test_an_oversized_metadata_entry_is_refused_before_it_is_read(tiny_run, tmp_path):
    from lungdx.errors import LungdxError
    from lungdx.model_file import read_info

    bomb = with_info(tiny_run / "models" / "model.keras", tmp_path / "bomb.keras", b" " * (64 << 20) + b"{}")
    assert bomb.stat().st_size < 8 << 20  # 64 MiB of spaces compress to almost nothing
    with pytest.raises(LungdxError, match="declares 67108866 bytes, more than 1048576"):
        read_info(bomb)


def test_an_image_bomb_is_named_with_the_reason_and_the_other_files_are_answered(tiny_run, inputs, tmp_path, capsys):
    from lungdx.cli import main  # what python -m lungdx runs; in this process, to spare a TensorFlow start
    from tests.helpers import png_bomb

    bomb = png_bomb(tmp_path / "bomb.png")  # 30000x30000: 900 MB decoded, under 1 MB on disk
    status = main(
        ["predict", str(inputs["gray"]), str(bomb), "--model", str(tiny_run / "models" / "model.keras"), "--json"]
    )
    out, err = capsys.readouterr()
    assert status == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {bomb}: too large to decode safely: 30000x30000 is 900,000,000 pixels, over the "
        "limit of 36,000,000 (lungdx.images.MAX_PIXELS, a longest side of 6000); downscale it first"
    ]
    good, refused = json.loads(out)
    assert good["path"] == str(inputs["gray"]) and abs(sum(good["probabilities"].values()) - 1) < 1e-4
    assert refused["path"] == str(bomb) and "predicted" not in refused and "too large" in refused["error"]


@pytest.mark.slow
def test_a_model_of_cropped_lungs_needs_each_images_mask_and_uses_it_as_training_did(tmp_path, inputs):
    """prepare.lung_mask crop: predict cuts each X-ray to its lungs from --mask (a file, or a folder of
    masks named as the images), exactly as prepare did; without masks it says it cannot."""
    from lungdx.model_file import save_model
    from lungdx.models import build_cnn

    model = build_cnn(
        4,
        settings(
            {
                "seed": 1,
                "prepare.image_size": 32,
                "baseline.image_size": 8,
                "model": "cnn",
                "models.cnn.filters": [4, 8],
                "models.cnn.dense_units": 8,
                "models.cnn.dropout": 0.0,
            }
        ).train,
    )
    path = tmp_path / "cropped.keras"
    save_model(model, path, ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], 32, "cnn", lung_mask="crop")
    masks = tmp_path / "masks"
    mask = np.zeros((256, 256), np.uint8)
    mask[60:200, 30:120] = 255  # one lung, on the left: a crop far from the whole image
    write_image(masks / "gray.png", mask)

    proc = predict(inputs["gray"], "--model", path)
    assert proc.returncode == 2 and "trained on images cut to their lungs (lung focus crop)" in proc.stderr
    assert "--mask" in proc.stderr and "Traceback" not in proc.stderr

    proc = predict(inputs["gray"], inputs["rgb"], "--model", path, "--mask", masks, "--json")
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)
    assert results[1]["error"].startswith(f"lung mask {masks / 'rgb.png'}: cannot read file")
    expected = model.predict(
        load_for_model(inputs["gray"], 32, "crop", masks / "gray.png")[None, ..., None], verbose=0
    )[0]
    np.testing.assert_allclose(list(results[0]["probabilities"].values()), expected, atol=1e-5)
    whole = model.predict(load_for_model(inputs["gray"], 32, "none")[None, ..., None], verbose=0)[0]
    assert np.abs(expected - whole).max() > 1e-4  # the crop changed what the model saw

    single = predict(inputs["gray"], "--model", path, "--mask", masks / "gray.png", "--json")
    assert single.returncode == 0 and json.loads(single.stdout)[0]["probabilities"] == results[0]["probabilities"]
    same = predict(inputs["gray"], "--model", path, "--mask", inputs["gray"])
    assert same.returncode == 2 and "would be the X-ray itself" in same.stderr
    twin = write_image(tmp_path / "elsewhere" / "gray.png", cv2.imread(str(inputs["rgb"]), cv2.IMREAD_GRAYSCALE))
    twins = predict(inputs["gray"], twin, "--model", path, "--mask", masks)
    assert twins.returncode == 2 and "have the same file name, so one mask" in twins.stderr
