"""The trained model on a dataset it was not trained on (lungdx.external): the same metrics on the
classes both share, and where Grad-CAM looks against the lungs."""

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import f1_score

from lungdx.errors import LungdxError, ParamError
from lungdx.external import evaluate_external
from lungdx.images import prepare_image
from lungdx.synthetic import generate_dataset
from tests.helpers import make_flat_dataset, settings, shared


@pytest.fixture(scope="module")
def other_source(tmp_path_factory):
    """Synthetic X-rays the tiny model never saw (another seed), with lung and lesion masks, plus a
    class the model does not know and one exact duplicate."""
    root = tmp_path_factory.mktemp("external") / "src"
    generate_dataset(root, per_class=5, seed=77, size=64, workers=1)
    for sub in ("images", "masks"):
        (root / "Tuberculosis" / sub).mkdir(parents=True)
        shutil.copy(root / "Normal" / sub / "Normal-1.png", root / "Tuberculosis" / sub / "Tuberculosis-1.png")
    shutil.copy(root / "COVID" / "images" / "COVID-1.png", root / "COVID" / "images" / "COVID-copy.png")
    return root


@pytest.mark.slow
def test_scores_the_shared_classes_as_the_model_sees_them_with_intervals_and_lung_share(
    tiny_run, other_source, tmp_path
):
    import keras

    model_path = tiny_run / "models" / "model.keras"
    found = evaluate_external(
        model_path,
        str(other_source),
        metrics_path=tmp_path / "m.json",
        details_path=tmp_path / "d.json",
        seed=5,
        layer=None,
    )
    headline = json.loads((tmp_path / "m.json").read_text())
    assert list(headline) == [
        "n_images",
        "accuracy",
        "accuracy_ci",
        "f1_macro",
        "f1_macro_ci",
        "ece",
        "lung_energy_share",
        "lung_energy_share_ci",
        "lung_energy_chance",
        "pointing_game",
        "pointing_chance",
    ]
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads(json.dumps(found))
    skipped = {item["path"]: item["reason"] for item in found["skipped"]}
    assert skipped == {
        "Tuberculosis/images/Tuberculosis-1.png": "class 'Tuberculosis', which the model does not know",
        "COVID/images/COVID-copy.png": "exact duplicate of COVID/images/COVID-1.png",
    }
    assert found["classes_found"] == ["COVID", "Lung_Opacity", "Normal", "Tuberculosis", "Viral Pneumonia"]

    # The same numbers from the model on the images prepared by hand, in the same order.
    model = keras.models.load_model(model_path)
    classes = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    paths = sorted(
        p for c in classes for p in (other_source / c / "images").glob("*.png") if p.name != "COVID-copy.png"
    )
    images = np.stack([prepare_image(p, 48, "none")[0] for p in paths])
    y_true = np.array([classes.index(p.parent.parent.name) for p in paths])
    y_pred = model.predict(images[..., None], verbose=0).argmax(1)
    assert headline["n_images"] == 20 and headline["accuracy"] == pytest.approx((y_pred == y_true).mean(), abs=1e-6)
    assert headline["accuracy_ci"]["lower"] <= headline["accuracy"] <= headline["accuracy_ci"]["upper"]
    assert headline["f1_macro"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=range(4), zero_division=0), abs=1e-6
    )
    assert 0 <= headline["lung_energy_chance"] < 1 and 0 <= headline["lung_energy_share"] <= 1
    low, high = headline["lung_energy_share_ci"].values()
    assert low <= headline["lung_energy_share"] <= high
    for c in classes:
        assert found["per_class"][c]["n"] == 5


@pytest.mark.slow
def test_one_class_source_without_masks_gives_accuracy_only_and_unknown_classes_are_refused(tiny_run, tmp_path):
    model_path = tiny_run / "models" / "model.keras"
    make_flat_dataset(tmp_path / "covid_only", {"COVID": 6}, size=64)
    found = evaluate_external(
        model_path,
        str(tmp_path / "covid_only"),
        metrics_path=tmp_path / "m.json",
        details_path=None,
        seed=1,
        layer=None,
    )
    headline = json.loads((tmp_path / "m.json").read_text())
    assert list(headline) == ["n_images", "accuracy", "accuracy_ci", "ece"]  # one class: no macro F1, no masks
    assert found["per_class"]["COVID"]["sensitivity"] == headline["accuracy"]

    make_flat_dataset(tmp_path / "other", {"Cat": 3, "Dog": 3}, size=64)
    with pytest.raises(LungdxError, match=r"classes \['Cat', 'Dog'\] share none with the model's"):
        evaluate_external(
            model_path,
            str(tmp_path / "other"),
            metrics_path=tmp_path / "m2.json",
            details_path=None,
            seed=1,
            layer=None,
        )
    assert not (tmp_path / "m2.json").exists()


@pytest.mark.parametrize(
    "value, message",
    [
        ({"bad name": "/x"}, "a name of letters, digits"),
        ({"ok": "kaggle"}, "the path of a local folder or .zip"),
        ({"ok": "https://x/y.zip"}, "the path of a local folder or .zip"),
        (["/x"], "a mapping of names to local folders"),
        ({"home": "~/data/x"}, "without expanding ~"),
        ({"a": 5}, "the path of a local folder or .zip"),
        (None, r"a mapping .* or \{\} for none"),  # dvc's foreach refuses null: no hidden default for it
    ],
)
def test_external_params_are_checked_before_any_work(value, message):
    from lungdx import params as P
    from tests.helpers import ROOT

    with pytest.raises(ParamError, match=message):
        settings({"external": value})
    assert settings({"external": {}}).external.sources == ()
    two = settings({"external": {"b": "/data/b", "a": "/data/a"}}).external
    assert two.names == ["b", "a"] and two.source("a") == "/data/a" and hash(two)
    with pytest.raises(LungdxError, match="external has no 'c': its names are b, a"):
        two.source("c")
    # Every key of params.yaml is required: one without `external` is refused, naming it.
    without = P.read(ROOT / "params.yaml")
    del without["external"]
    with pytest.raises(ParamError, match="external is missing: add it"):
        P.check(without)


@pytest.mark.slow
def test_real_covid_xrays_with_hand_made_masks(tiny_run, tmp_path):
    """cxr-covid-masked: one class, non-square images and their masks; every image is scored."""
    source = shared("cxr-covid-masked")
    found = evaluate_external(
        tiny_run / "models" / "model.keras", str(source), metrics_path=None, details_path=None, seed=1, layer=None
    )
    assert found["n_images"] == len(list((source / "COVID" / "images").glob("*.png"))) - len(found["skipped"])
    assert found["classes_scored"] == ["COVID"] and "f1_macro" not in found
    # Masks cover 17-59 % of these images (SOURCES.md); padding to a square lowers the share a little.
    assert 0.1 < found["lung_energy_chance"] < 0.5


@pytest.mark.slow
def test_a_model_of_cropped_lungs_is_scored_on_cropped_images_and_needs_every_mask(other_source, tmp_path):
    import keras

    from lungdx.model_file import save_model
    from lungdx.models import build_cnn

    classes = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
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
    save_model(model, tmp_path / "crop.keras", classes, 32, "cnn", lung_mask="crop")
    found = evaluate_external(
        tmp_path / "crop.keras", str(other_source), metrics_path=None, details_path=None, seed=1, layer=None
    )
    paths = sorted(
        p for c in classes for p in (other_source / c / "images").glob("*.png") if p.name != "COVID-copy.png"
    )
    images = np.stack([prepare_image(p, 32, "crop", p.parent.parent / "masks" / p.name)[0] for p in paths])
    y_true = np.array([classes.index(p.parent.parent.name) for p in paths])
    predicted = keras.models.load_model(tmp_path / "crop.keras").predict(images[..., None], verbose=0).argmax(1)
    assert found["lung_mask"] == "crop" and found["accuracy"] == pytest.approx((predicted == y_true).mean())

    make_flat_dataset(tmp_path / "no_masks", {"COVID": 3, "Normal": 3}, size=64)
    with pytest.raises(
        LungdxError,
        match=r"the model's lung focus \(as it was trained\) is "
        r"crop, but 6 of 6 images have no lung mask .*: COVID/images/COVID-1.png",
    ):
        evaluate_external(
            tmp_path / "crop.keras",
            str(tmp_path / "no_masks"),
            metrics_path=None,
            details_path=None,
            seed=1,
            layer=None,
        )


@pytest.mark.slow
def test_cli_out_folder_is_checked_first_and_source_errors_name_the_external_source(tiny_run, other_source, tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    def external(*args, cwd=tmp_path):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "lungdx",
                "external",
                *map(str, args),
                "--model",
                tiny_run / "models" / "model.keras",
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )

    (tmp_path / "a_file").write_text("")
    for out, message in (
        (tmp_path / "a_file", "cannot be used as a folder"),
        (other_source / "COVID" / "out", "is inside the source"),
    ):
        proc = external(other_source, "--out", out)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (other_source / "COVID" / "out").exists()
    project = external(".", "--out", tmp_path / "o", cwd=ROOT)  # the project itself: refused by download's check
    assert (
        project.returncode == 2 and "the external source" in project.stderr and "dataset.source" not in project.stderr
    )
    good = external(other_source, "--out", tmp_path / "o")
    assert good.returncode == 0, good.stderr
    assert "accuracy" in good.stdout and json.loads((tmp_path / "o" / "metrics.json").read_text())["n_images"] == 20


@pytest.mark.parametrize("source", ["kaggle:foo", "kaggle:", "kaggle:a/b/versions/x", "synthetic", "kaggle", " "])
def test_a_source_external_cannot_take_is_one_line_naming_the_forms_it_takes(tiny_run, tmp_path, source):
    with pytest.raises(
        LungdxError,
        match=r"the external source = .* is not allowed: a local folder, a local .zip, an "
        r"http\(s\) URL of a .zip, or kaggle:<owner>/<dataset>$",
    ):
        evaluate_external(
            tiny_run / "models" / "model.keras",
            source,
            metrics_path=None,
            details_path=None,
            seed=1,
            layer=None,
            project_root=tmp_path,
        )
    with pytest.raises(
        LungdxError,
        match=r"the external source = '/no/such/folder' is not allowed: a local folder, "
        r".*; no file or folder exists",
    ):
        evaluate_external(
            tiny_run / "models" / "model.keras",
            "/no/such/folder",
            metrics_path=None,
            details_path=None,
            seed=1,
            layer=None,
            project_root=tmp_path,
        )
