"""Training: batches stay uint8 until used, settings are checked first, runs are deterministic,
and the VGG19 head trained on cached features becomes one end-to-end model."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from lungdx.arrays import TTA_SHIFT, batches, epoch_size, load_split, shifted_views, steps_per_epoch
from lungdx.arrays import predict as predict_probs
from lungdx.download import download
from lungdx.errors import LungdxError
from lungdx.evaluate import evaluate, predict_split
from lungdx.feature_cache import cached_features_for
from lungdx.features import features
from lungdx.metrics import classification_metrics
from lungdx.model_file import load_model, read_info, save_model
from lungdx.prepare import prepare
from lungdx.sample import sample
from lungdx.train import train
from tests.helpers import list_lung_masks, settings

TINY_CNN = {
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 0.001,
    "filters": [4, 8],
    "dense_units": 8,
    "warmup_epochs": 0,
}
TINY_VGG = {
    "weights": "none",
    "epochs": 3,
    "batch_size": 8,
    "learning_rate": 0.001,
    "dense_units": 8,
    "warmup_epochs": 0,
}


def make_params(**changes):
    """params.yaml with tiny training settings at 32 px and dotted-key `changes`, checked."""
    return settings(
        {
            "seed": 5,
            "prepare.image_size": 32,
            "baseline.image_size": 8,
            "model": "cnn",
            **{f"models.cnn.{k}": v for k, v in TINY_CNN.items()},
            **{f"models.vgg19.{k}": v for k, v in TINY_VGG.items()},
            **changes,
        }
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Synthetic data sampled and prepared at 32 px, shared by this module's tests."""
    root = tmp_path_factory.mktemp("train")
    params = settings(
        {
            "seed": 2,
            "dataset.source": "synthetic",
            "dataset.synthetic.per_class": 10,
            "dataset.synthetic.image_size": 64,
            "dataset.classes": [],
            "sample.per_class": 10,
            "sample.val_size": 0.2,
            "sample.test_size": 0.2,
            "prepare.image_size": 32,
            "prepare.lung_mask": "none",
            "baseline.image_size": 8,
        }
    )
    download(params.download, root / "raw")
    sample(params.sample, root / "raw", root / "sampled")
    manifest = root / "sampled" / "manifest.csv"
    prepare(params.prepare, manifest, root / "raw", list_lung_masks(root, manifest, root / "raw"), root / "prepared")
    return root


def run_train(root, out, params):
    (root / out).mkdir(exist_ok=True)
    features(params.features, root / "prepared", root / out / "features")
    return train(
        params.train,
        root / "prepared",
        root / out / "features",
        root / out / "models" / "model.keras",
        root / out / "dvclive",
    )


def test_batches_convert_one_batch_at_a_time_and_shuffle_by_seed():
    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    labels = np.arange(10) % 3
    data = batches(images, labels, 3, 4, shuffle_seed=1, epochs=2)
    both = list(data.as_numpy_iterator())
    assert len(both) == 2 * steps_per_epoch(10, 4) == 6
    epoch1, epoch2 = both[:3], both[3:]
    x, y = epoch1[0]
    assert x.dtype == np.float32 and x.shape == (4, 4, 4, 1) and y.shape == (4, 3)
    for epoch in (epoch1, epoch2):
        seen = np.concatenate([b[0][:, 0, 0, 0] for b in epoch]) // 16
        assert sorted(seen.astype(int)) == list(range(10)), "every image once per epoch"
    np.testing.assert_array_equal(y, np.eye(3)[labels[(x[:, 0, 0, 0] // 16).astype(int)]])
    assert not np.array_equal(epoch2[0][0], x), "a new order each epoch"
    # The order is numpy's: epoch k is the k-th permutation drawn from the seed, each batch sorted.
    rng = np.random.default_rng(1)
    for batch_, order in zip(
        epoch1 + epoch2,
        [np.sort(p[s : s + 4]) for p in (rng.permutation(10), rng.permutation(10)) for s in (0, 4, 8)],
        strict=True,
    ):
        np.testing.assert_array_equal(batch_[0][:, 0, 0, 0] // 16, order)
    again = list(batches(images, labels, 3, 4, shuffle_seed=1, epochs=2).as_numpy_iterator())
    for a, b in zip(again, both, strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # the same seed, the same batches
    assert images.dtype == np.uint8  # the source array is never converted as a whole


def test_balanced_batches_draw_every_class_as_often_as_the_largest_and_repeat_with_the_seed():
    labels = np.array([0] * 20 + [1] * 2 + [2] * 5)  # 10x imbalance
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1)
    assert epoch_size(labels, balanced=True) == 60 and epoch_size(labels, balanced=False) == 27
    data = batches(images, labels, 3, 6, shuffle_seed=3, epochs=2, balanced=True)
    drawn = [(x[:, 0, 0, 0].astype(int), y.argmax(axis=1)) for x, y in data.as_numpy_iterator()]
    assert len(drawn) == 2 * steps_per_epoch(60, 6)
    for epoch in (drawn[:10], drawn[10:]):
        seen = np.concatenate([x for x, _ in epoch])
        assert np.bincount(labels[seen]).tolist() == [20, 20, 20], "each class as often as the largest"
        assert set(seen) == set(range(len(labels))), "every image at least once an epoch"
        assert np.bincount(seen, minlength=27)[:20].max() == 1, "the largest class's images once each"
    for x, y in drawn:
        np.testing.assert_array_equal(y, labels[x])
    again = [x[:, 0, 0, 0] for x, _ in batches(images, labels, 3, 6, 3, 2, balanced=True).as_numpy_iterator()]
    assert all(np.array_equal(a, b) for a, (b, _) in zip(again, drawn, strict=True))
    with pytest.raises(ValueError, match="labels and a shuffle_seed"):
        batches(images, labels, 3, 6, balanced=True)


def test_test_time_augmentation_averages_the_image_and_four_shifted_copies():
    x = np.arange(2 * 50 * 50, dtype=np.float32).reshape(2, 50, 50, 1) % 251 + 1
    views = shifted_views(x)
    d = round(TTA_SHIFT * 50)
    assert len(views) == 5 and d == 2
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1][:, d:], x[:, :-d])  # down, black where it moved away
    assert not views[1][:, :d].any()
    np.testing.assert_array_equal(views[4][:, :, :-d], x[:, :, d:])  # left
    assert not views[4][:, :, -d:].any()
    # A "model" that reads the top-left pixel: its TTA output is the mean of that pixel over the views.
    corner = keras.Sequential(
        [keras.Input((50, 50, 1)), keras.layers.Cropping2D(((0, 49), (0, 49))), keras.layers.Flatten()]
    )
    out = predict_probs(corner, x[..., 0].astype(np.uint8), tta=True)
    np.testing.assert_allclose(out[:, 0], np.mean([v[:, 0, 0, 0] for v in views], axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="shifts images, not features"):
        shifted_views(np.zeros((2, 8), np.float32))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model", "resnet", "model = 'resnet'.*one of cnn, vgg19"),
        ("models.cnn.epochs", 0, "models.cnn.epochs = 0"),
        ("models.cnn.learning_rate", -1, "models.cnn.learning_rate"),
        ("models.cnn.dropout", 1.5, "models.cnn.dropout"),
        ("prepare.image_size", 16, "prepare.image_size = 16.*at least 32 for vgg19"),
        ("models.vgg19.weights", "/nowhere/w.h5", "models.vgg19.weights.*does not exist"),
    ],
)
def test_bad_training_params_fail_before_any_work(key, value, message):
    changes = {key: value}
    if key.startswith(("prepare", "models.vgg19")):
        changes["model"] = "vgg19"
    with pytest.raises(LungdxError, match=message):
        make_params(**changes)


def test_cnn_training_is_deterministic_and_logs_every_epoch(workdir):
    params = make_params()
    run_train(workdir, "a", params)
    run_train(workdir, "b", params)
    wa = keras.models.load_model(workdir / "a" / "models" / "model.keras").get_weights()
    wb = keras.models.load_model(workdir / "b" / "models" / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    _, info = load_model(workdir / "a" / "models" / "model.keras")
    assert (info["classes"], info["image_size"], info["architecture"]) == (
        ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"],
        32,
        "cnn",
    )
    for name in ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy"):
        rows = (workdir / "a" / "dvclive" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert len(rows) == 1 + 2, f"{name}: a header and one row per epoch"
        assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2"], "steps are the epochs' numbers, from 1"


def small_segmenter(workdir: Path) -> Path:
    """A segment-stage folder holding a small U-Net learned from the sampled images' masks (the
    stage itself wants 50 masks; these 40 teach synthetic lungs well enough)."""
    import pandas as pd

    from lungdx.model_file import save_reproducibly
    from lungdx.segment import train_segmenter

    s = settings(
        {
            "prepare.lung_mask": "crop",
            "segment.image_size": 64,
            "segment.epochs": 15,
            "segment.batch_size": 8,
            "segment.filters": [8, 16, 32, 64],
        }
    ).segment
    rows = pd.read_csv(workdir / "sampled" / "manifest.csv", keep_default_na=False)
    pairs = {
        split: [(workdir / "raw" / r.path, workdir / "raw" / r.mask) for r in rows[rows["split"] == split].itertuples()]
        for split in ("train", "val")
    }
    segmenter, history = train_segmenter(s, pairs["train"], pairs["val"])
    out = workdir / "with_segmenter"
    out.mkdir()
    save_reproducibly(segmenter, out / "segmenter.keras")
    (out / "meta.json").write_text(
        json.dumps(
            {"segmenter": {"image_size": 64, "learned_from": "dataset.source", "test_dice": history["val_dice"]}}
        )
    )
    return out


@pytest.mark.slow  # three trainings
def test_augmented_training_on_cropped_lungs_repeats_and_the_file_records_the_crop(workdir):
    """Augmentation draws from the seed (same weights twice), and the model file says its images
    were cut to the lungs, so predict can refuse an X-ray without its mask."""
    params = make_params(
        **{
            "prepare.lung_mask": "crop",
            "models.cnn.augment": {
                "rotation": 10,
                "shift": 0.1,
                "zoom": 0.1,
                "brightness": 0.1,
                "contrast": 0.1,
                "flip": False,
            },
        }
    )
    prepare(
        params.prepare,
        workdir / "sampled" / "manifest.csv",
        workdir / "raw",
        workdir / "segmented",
        workdir / "cropped",
    )
    with pytest.raises(LungdxError, match="carries its lung segmenter"):  # a crop model needs one to carry
        train(
            params.train,
            workdir / "cropped",
            workdir / "none" / "features",
            workdir / "none" / "model.keras",
            workdir / "none" / "dvclive",
        )
    segmented = small_segmenter(workdir)
    for out in ("aug_a", "aug_b"):
        train(
            params.train,
            workdir / "cropped",
            workdir / out / "features",
            workdir / out / "model.keras",
            workdir / out / "dvclive",
            segmented_dir=segmented,
        )
    wa = keras.models.load_model(workdir / "aug_a" / "model.keras").get_weights()
    wb = keras.models.load_model(workdir / "aug_b" / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    model, info = load_model(workdir / "aug_a" / "model.keras")
    assert info["input"]["lung_mask"] == "crop" and info["segmenter"]["image_size"] == 64
    assert model.get_layer("augment_geometry")  # the loaded model keeps them; they act only in training
    run_train(workdir, "plain", make_params())
    assert read_info(workdir / "plain" / "models" / "model.keras")["input"]["lung_mask"] == "none"


@pytest.mark.slow
def test_vgg19_head_on_cached_features_becomes_one_end_to_end_model(workdir):
    params = make_params(model="vgg19")
    run_train(workdir, "v", params)
    feats = np.load(workdir / "v" / "features" / "test.npy")
    assert feats.shape[1] == 512 and feats.dtype == np.float32
    model, info = load_model(workdir / "v" / "models" / "model.keras")
    assert info["architecture"] == "vgg19" and model.get_layer("block5_conv4")
    # The end-to-end model on images equals the trained head on the cached features.
    head = keras.Model(model.get_layer("dropout0").input, model.output)
    images, _ = load_split(workdir / "prepared", "test")
    np.testing.assert_allclose(predict_probs(model, images), head.predict(feats, verbose=0), atol=1e-5)
    # So evaluate takes the head on the cached features instead of running the base again.
    np.testing.assert_allclose(
        predict_split(model, images, workdir / "v" / "features", "test"), predict_probs(model, images), atol=1e-5
    )
    assert cached_features_for(model, workdir / "v" / "features", "test") is not None


@pytest.mark.slow
def test_vgg19_fine_tuning_trains_the_last_block_on_images(workdir, capsys):
    from lungdx.models import build_vgg19

    params = make_params(model="vgg19", **{"models.vgg19.fine_tune_blocks": 1, "models.vgg19.fine_tune_epochs": 1})
    summary = run_train(workdir, "ft", params)
    tuned, _ = load_model(workdir / "ft" / "models" / "model.keras")
    _, cached = build_vgg19(4, params.train, weights=None)
    cached.load_weights(workdir / "ft" / "features" / "base.weights.h5")
    # block5 moved during fine-tuning, block1 stayed as the features stage computed it.
    assert not np.array_equal(
        tuned.get_layer("block5_conv4").get_weights()[0], cached.get_layer("block5_conv4").get_weights()[0]
    )
    np.testing.assert_array_equal(
        tuned.get_layer("block1_conv1").get_weights()[0], cached.get_layer("block1_conv1").get_weights()[0]
    )
    rows = (workdir / "ft" / "dvclive" / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    steps = [int(r.split("\t")[0]) for r in rows[1:]]
    # Three epochs of the head, then the fine-tuning epoch as Keras counts it: the fourth.
    assert steps == [1, 2, 3, 4] and summary["epochs_run"] == 4, (steps, summary)
    assert "Epoch 4/4" in capsys.readouterr().out
    # Its base is no longer the cached one: evaluate must run it on the images.
    assert cached_features_for(tuned, workdir / "ft" / "features", "test") is None


def test_evaluate_writes_metrics_and_plots(workdir, tmp_path):
    run_train(workdir, "e", make_params())
    result = evaluate(
        make_params().evaluate,
        workdir / "e" / "models" / "model.keras",
        workdir / "prepared",
        workdir / "sampled" / "manifest.csv",
        tmp_path / "eval.json",
        tmp_path / "details.json",
        tmp_path / "plots",
        workdir / "e" / "features",
    )
    details = json.loads((tmp_path / "details.json").read_text())
    assert details == result and details["n_test"] == 8 and details["model"] == "cnn"
    assert {"f1_weighted", "per_class", "confusion_matrix"} <= set(details)
    assert np.array(details["confusion_matrix"]).sum() == 8
    # The metrics file holds the headline numbers only, headline first, numbers only.
    headline = json.loads((tmp_path / "eval.json").read_text())
    assert list(headline) == ["accuracy", "f1_macro", "roc_auc_ovr", "accuracy_ci", "f1_macro_ci", "ece"]
    assert headline == {k: details[k] for k in headline}
    table = (tmp_path / "plots" / "predictions.csv").read_text().splitlines()
    assert table[0].startswith("path,actual,predicted,p_COVID") and len(table) == 9
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["predictions.csv", "reliability.csv", "roc.csv"]


def test_classification_metrics_on_known_predictions():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    result = classification_metrics(np.array([0, 1, 1, 1]), probs, ["COVID", "Normal"], seed=0)
    assert result["accuracy"] == 0.75 and result["confusion_matrix"] == [[1, 0], [1, 2]]
    normal = result["per_class"]["Normal"]
    assert {k: normal[k] for k in ("precision", "recall", "f1", "support")} == {
        "precision": 1.0,
        "recall": 0.666667,
        "f1": 0.8,
        "support": 3,
    }
    assert (normal["sensitivity"], normal["specificity"]) == (0.666667, 1.0)  # 2 of 3 Normal, 1 of 1 COVID
    assert result["roc_auc_ovr"] == 1.0  # two classes: the AUC of p(Normal)


DIVERGING = {
    "cnn": ({"models.cnn.learning_rate": 1e6}, r"models\.cnn\.learning_rate \(now 1000000\), e\.g\. to 100000,"),
    # The head trains normally; the fine-tuning phase's rate is the one to lower.
    "vgg19_fine_tuning": (
        {
            "model": "vgg19",
            "models.vgg19.fine_tune_blocks": 1,
            "models.vgg19.fine_tune_epochs": 1,
            "models.vgg19.fine_tune_learning_rate": 1e6,
        },
        r"epoch 4, batch \d+; lower models\.vgg19\.fine_tune_learning_rate \(now 1000000\)",
    ),
}


@pytest.mark.parametrize(
    "case", [pytest.param(name, marks=pytest.mark.slow if "vgg19" in name else ()) for name in DIVERGING]
)
def test_a_diverging_training_stops_naming_epoch_batch_and_learning_rate_and_leaves_no_model_or_dvclive(workdir, case):
    changes, named = DIVERGING[case]
    with pytest.raises(LungdxError) as caught:
        run_train(workdir, f"diverged_{case}", make_params(**changes))
    message = str(caught.value)
    assert re.fullmatch(
        r"training diverged: the loss became (nan|inf) in epoch \d+, batch \d+; lower \S+ \(now "
        r"[^)]+\), e\.g\. to [0-9.e+-]+, or check the data; no model was saved",
        message,
    ), message
    assert re.search(named, message), message
    assert not (workdir / f"diverged_{case}" / "models" / "model.keras").exists()
    assert not (workdir / f"diverged_{case}" / "dvclive").exists(), "no partial curves that look complete"


def test_a_failed_save_removes_the_dvclive_folder_and_writes_no_model(workdir):
    # The model's folder cannot be made (a file is in the way): an OSError after training, like a full disk.
    out = workdir / "blocked"
    out.mkdir()
    (out / "models").write_text("not a folder")
    features(make_params().features, workdir / "prepared", out / "features")
    with pytest.raises(OSError):
        train(
            make_params().train, workdir / "prepared", out / "features", out / "models" / "model.keras", out / "dvclive"
        )
    assert not (out / "dvclive").exists()
    assert (out / "models").read_text() == "not a folder"


@pytest.fixture(scope="module")
def nan_model(workdir):
    """A model file whose network gives nan (one weight set to nan), saved as train saves models."""
    from lungdx.models import build_cnn

    model = build_cnn(
        4, make_params(**{"models.cnn.filters": [4], "models.cnn.dense_units": 4, "models.cnn.dropout": 0.0}).train
    )
    kernel, bias = model.get_layer("probabilities").get_weights()
    bias[0] = np.nan
    model.get_layer("probabilities").set_weights([kernel, bias])
    path = workdir / "nan" / "model.keras"
    save_model(model, path, ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], 32, "cnn", "none")
    return path


def test_evaluate_refuses_a_model_whose_outputs_are_nan_naming_the_file(workdir, nan_model, tmp_path):
    with pytest.raises(LungdxError) as caught:
        evaluate(
            make_params(seed=0).evaluate,
            nan_model,
            workdir / "prepared",
            workdir / "sampled" / "manifest.csv",
            tmp_path / "eval.json",
            tmp_path / "details.json",
            tmp_path / "plots",
            workdir / "nan" / "features",
        )
    assert str(caught.value) == (
        f"{nan_model}: the model's outputs are not finite numbers for 8 of 8 images, so "
        "its weights are broken (did its training diverge?); retrain it: dvc repro -f train"
    )
    assert list(tmp_path.iterdir()) == [], "no metrics computed from nan"


def test_predict_cli_with_a_nan_model_prints_one_error_and_exits_2_never_nan(workdir, nan_model, capsys):
    from lungdx.cli import main  # what python -m lungdx runs; in this process, to spare a TensorFlow start

    image = next((workdir / "raw").rglob("images/*.png"))
    status = main(["predict", str(image), "--model", str(nan_model)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {nan_model}: the model's outputs are not finite numbers for 1 of 1 images, so its "
        "weights are broken (did its training diverge?); retrain it: dvc repro -f train"
    ], err
    assert "Traceback" not in err and "nan" not in errors[0].replace(str(nan_model), "").lower()


def test_a_trained_model_with_non_finite_outputs_is_never_saved(workdir, nan_model):
    """The last guard before save_model: even when every logged loss was finite, a network that
    gives nan on the validation images is refused, naming the learning rate to lower."""
    from lungdx.train import _check_outputs_finite

    model, _ = load_model(nan_model)
    val_x, _ = load_split(workdir / "prepared", "val")
    with pytest.raises(LungdxError) as caught:
        _check_outputs_finite(
            model, val_x, "learning_rate", make_params(model="cnn", **{"models.cnn.learning_rate": 0.5}).train
        )
    assert str(caught.value) == (
        f"training diverged: the trained model's outputs are not finite for {len(val_x)} "
        f"of {len(val_x)} validation images; lower models.cnn.learning_rate (now 0.5), "
        "e.g. to 0.05, or check the data; no model was saved"
    )


def test_dvclive_logs_the_settings_as_params_yaml_names_them():
    from lungdx.train import logged_params

    cnn = logged_params(settings().train)
    assert cnn["model"] == "cnn" and cnn["learning_rate"] == 0.0003 and cnn["augment.flip"] is False
    assert not {"architecture", "filters", "weights", "fine_tune_blocks"} & set(cnn)
    vgg19 = logged_params(settings({"model": "vgg19", "models.vgg19.weights": "none"}).train)
    assert vgg19["model"] == "vgg19" and vgg19["weights"] is None and vgg19["fine_tune_epochs"] == 5
    assert "filters" not in vgg19


def test_the_training_levers_shape_the_rate_and_the_file_records_test_time_augmentation(workdir, tmp_path):
    """Cosine decays the rate to 0 by the last epoch, plateau halves it when the val loss stalls,
    and a model trained with tta is scored by evaluate and Grad-CAM as the mean over shifted copies."""
    from lungdx.train import learning_rate_schedule

    cosine = make_params(**{"models.cnn.lr_schedule": "cosine"}).train
    schedule = learning_rate_schedule(cosine, "learning_rate", 100)
    assert float(schedule(0)) == pytest.approx(0.001) and float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_schedule(make_params().train, "learning_rate", 100) == 0.001
    levers = {
        "models.cnn.lr_schedule": "plateau",
        "models.cnn.patience": 3,
        "models.cnn.epochs": 6,
        "models.cnn.learning_rate": 0.05,  # too high: the val loss stalls, so the rate is halved
        "models.cnn.label_smoothing": 0.1,
        "models.cnn.balanced_batches": True,
        "models.cnn.batch_norm": True,
        "models.cnn.pooling": "global_average",
        "models.cnn.tta": True,
    }
    run_train(workdir, "levers", make_params(**levers))
    rates = workdir / "levers" / "dvclive" / "plots" / "metrics" / "train" / "learning_rate.tsv"
    rates = rates if rates.exists() else workdir / "levers" / "dvclive" / "plots" / "metrics" / "learning_rate.tsv"
    logged = [float(row.split("\t")[1]) for row in rates.read_text().splitlines()[1:]]
    assert logged[0] == pytest.approx(0.05) and min(logged) < 0.05, logged
    path = workdir / "levers" / "models" / "model.keras"
    assert read_info(path)["tta"] is True
    model, info = load_model(path)
    x, y = load_split(workdir / "prepared", "test")
    evaluate(
        make_params().evaluate,
        path,
        workdir / "prepared",
        workdir / "sampled" / "manifest.csv",
        tmp_path / "eval.json",
        tmp_path / "details.json",
        tmp_path / "plots",
        workdir / "levers" / "features",
    )
    written = np.loadtxt(tmp_path / "plots" / "predictions.csv", delimiter=",", skiprows=1, usecols=range(3, 7))
    shifted = predict_probs(model, x, tta=True)
    np.testing.assert_allclose(written, shifted, atol=1e-6)
    assert np.abs(shifted - predict_probs(model, x)).max() > 1e-4, "the copies change the outputs"
    # Grad-CAM (report, external, predict --gradcam) gives the same probabilities and draws the
    # class those pick, from the image itself.
    from lungdx.heatmaps import PREDICTED, GradCam

    probs, heat = GradCam(model, tta=True).explain(x, np.full(len(x), PREDICTED))
    np.testing.assert_allclose(probs, shifted, atol=1e-6)
    _, own = GradCam(model).explain(x, shifted.argmax(1))
    np.testing.assert_allclose(heat, own, atol=1e-6)
