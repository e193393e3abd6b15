"""The two architectures: the original CNN exactly, VGG19 with a reachable base."""

import json
import re

import keras
import numpy as np
import pytest

from lungdx.errors import LungdxError, ParamError
from lungdx.heatmaps import default_layer
from lungdx.models import WeightsUnavailable, build_cnn, build_head_only, build_vgg19, unfreeze_last_blocks
from lungdx.params import resolve_vgg19_weights
from tests.helpers import settings

CNN = {"filters": [16, 32, 64, 128, 256], "dense_units": 160, "dropout": 0.3}


def cnn(image_size: int, **fields):
    """The cnn's settings at image_size px, with `fields` (filters, dense_units, dropout, seed, augment) as given;
    the rest as params.yaml has them."""
    return settings(
        {
            "model": "cnn",
            "prepare.image_size": image_size,
            "baseline.image_size": 8,
            **{("seed" if k == "seed" else f"models.cnn.{k}"): v for k, v in fields.items()},
        }
    ).train


def vgg(image_size: int, **fields):
    """The vgg19's settings at image_size px, with `fields` as given; the rest as params.yaml has them."""
    return settings(
        {
            "model": "vgg19",
            "prepare.image_size": image_size,
            "baseline.image_size": 8,
            "models.vgg19.weights": "none",
            **{("seed" if k == "seed" else f"models.vgg19.{k}"): v for k, v in fields.items()},
        }
    ).train


def test_cnn_is_the_original_network():
    model = build_cnn(4, cnn(256, **CNN))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert model.input_shape == (None, 256, 256, 1)
    assert [c.filters for c in convs] == [16, 32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.activation.__name__ == "relu" for c in convs)
    assert len(pools) == 5 and all(p.pool_size == (2, 2) for p in pools)
    assert [d.units for d in dense] == [160, 160, 160, 4] and dense[-1].activation.__name__ == "softmax"
    assert [d.rate for d in drops] == [0.3, 0.3, 0.3]
    # Functional, so Grad-CAM can reach model.inputs and any layer by name.
    assert model.inputs and default_layer(model) == "conv5"  # 16x16 at 256 px
    assert default_layer(build_cnn(4, cnn(128, **CNN))) == "conv4"  # conv5 is 8x8 there: too coarse


def test_vgg19_base_layers_are_reachable_and_frozen():
    model, base = build_vgg19(3, vgg(32, dense_units=160, dropout=0.3), weights=None)
    assert model.input_shape == (None, 32, 32, 1)
    assert model.get_layer("block5_conv4") is base.get_layer("block5_conv4")
    assert default_layer(model) == "block2_conv2"  # block2 is the last 16x16 grid at 32 px
    big, _ = build_vgg19(3, vgg(256, dense_units=8, dropout=0.3), weights=None)
    assert default_layer(big) == "block5_conv4"  # 16x16 at 256 px
    assert not any(w.trainable for layer in model.layers if layer.name.startswith("block") for w in layer.weights)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [160, 160, 3]
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.3, 0.3, 0.3]
    head = build_head_only(512, 3, vgg(32, dense_units=160, dropout=0.3))
    assert [layer.name for layer in head.layers if layer.weights] == [
        layer.name for layer in model.layers[-6:] if layer.weights
    ]


def test_vgg19_preprocessing_is_keras_preprocess_input_on_replicated_gray():
    model, _ = build_vgg19(2, vgg(32, dense_units=8, dropout=0.0), weights=None)
    prep = keras.Model(model.inputs, model.get_layer("vgg_preprocess").output)
    gray = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    expected = keras.applications.vgg19.preprocess_input(np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(prep.predict(gray, verbose=0), expected, atol=1e-3)


def test_unfreeze_last_blocks_makes_only_those_trainable():
    model, base = build_vgg19(2, vgg(32, dense_units=8, dropout=0.3), weights=None)
    unfreeze_last_blocks(base, 2)
    trainable = {layer.name.split("_")[0] for layer in base.layers if layer.trainable and layer.weights}
    assert trainable == {"block4", "block5"}


def test_weights_path_that_does_not_exist_names_the_key(tmp_path):
    with pytest.raises(ParamError, match="models.vgg19.weights.*does not exist"):
        resolve_vgg19_weights(str(tmp_path / "missing.h5"))
    assert resolve_vgg19_weights("none") is None


@pytest.mark.parametrize("damage", ["layer names without their groups", "groups without weights", "not HDF5"])
def test_a_weights_file_that_is_not_vgg19_s_is_one_clear_error(tmp_path, damage):
    """What Keras raises for each (KeyError, ValueError, OSError) is named as a bad weights file."""
    import h5py

    from lungdx.models import WeightsUnavailable, vgg19_base

    path = tmp_path / "weights.h5"
    names = [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for c in range(1, n + 1)]
    if damage == "not HDF5":
        path.write_bytes(b"not an HDF5 file at all")
    else:
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = [n.encode() for n in names]
            if damage == "groups without weights":
                for name in names:
                    f.create_group(name).attrs["weight_names"] = [f"{name}/kernel:0".encode()]
    with pytest.raises(
        WeightsUnavailable, match=rf"^{re.escape(str(path))}: not VGG19's no-top weights, or unreadable"
    ):
        vgg19_base(32, str(path))


def test_imagenet_offline_without_a_cached_file_names_the_other_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    from keras.src.utils import file_utils

    # No network in CI anyway; this keeps the test offline on a developer's connected machine too.
    monkeypatch.setattr(file_utils, "urlretrieve", _offline)
    with pytest.raises(WeightsUnavailable, match=r"not cached at .*could not be downloaded .*use none .*local copy"):
        build_vgg19(2, vgg(32, dense_units=8, dropout=0.3), weights="imagenet")
    # The features stage, which loads them, names the key to change.
    from lungdx.features import features
    from lungdx.params import FeaturesSettings

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "meta.json").write_text(json.dumps({"image_size": 32}))
    imagenet = FeaturesSettings(seed=0, architecture="vgg19", weights="imagenet")
    with pytest.raises(LungdxError, match=r"params.yaml: models.vgg19.weights = 'imagenet': .*use none .*local copy"):
        features(imagenet, prepared, tmp_path / "features")
    assert not (tmp_path / "features").exists()


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


AUGMENT = {"rotation": 10.0, "shift": 0.1, "zoom": 0.1, "brightness": 0.1, "contrast": 0.1, "flip": False}


def _augmenting_cnn(seed: int):
    return build_cnn(2, cnn(32, filters=[4, 8], dense_units=8, dropout=0.0, seed=seed, augment=AUGMENT))


def _augmented(model, images, training: bool):
    """What the model's augmentation layers make of `images` (the input of its `scale` layer)."""
    front = keras.Model(model.input, model.get_layer("scale").input)
    return keras.ops.convert_to_numpy(front(images, training=training))


def test_augmentation_changes_only_training_images_and_repeats_with_the_seed():
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    a, b, other = _augmenting_cnn(7), _augmenting_cnn(7), _augmenting_cnn(8)
    names = [layer.name for layer in a.layers if layer.name.startswith("augment_")]
    # One resampling, then the intensities.
    assert names == ["augment_geometry", "augment_brightness", "augment_contrast"]
    np.testing.assert_array_equal(_augmented(a, images, training=False), images)  # evaluating, predicting: as is
    first = _augmented(a, images, training=True)
    assert np.abs(first - images).mean() > 1.0
    np.testing.assert_allclose(first, _augmented(b, images, training=True), atol=1e-4)  # same seed, same draws
    assert np.abs(first - _augmented(other, images, training=True)).mean() > 1.0
    assert np.abs(first - _augmented(a, images, training=True)).mean() > 1.0  # new draws on each batch
    assert not a.get_layer("augment_geometry").trainable_weights  # nothing learnt: draws only


def test_no_augmentation_and_no_flip_unless_asked():
    plain = build_cnn(
        2,
        cnn(32, filters=[4], dense_units=8, dropout=0.0, seed=1, augment=dict.fromkeys(AUGMENT, 0.0) | {"flip": False}),
    )
    assert not [layer for layer in plain.layers if layer.name.startswith("augment_")]
    flips = build_cnn(
        2,
        cnn(32, filters=[4], dense_units=8, dropout=0.0, seed=1, augment=dict.fromkeys(AUGMENT, 0.0) | {"flip": True}),
    )
    assert [layer.name for layer in flips.layers if layer.name.startswith("augment_")] == ["augment_flip"]


def test_vgg19_augments_its_images_before_the_base():
    # params.yaml takes vgg19 augmentation only with fine-tuning, the only phase that sees images.
    cfg = vgg(32, dense_units=8, dropout=0.0, seed=1, augment=AUGMENT, fine_tune_blocks=1)
    model, base = build_vgg19(2, cfg, weights=None)
    names = [layer.name for layer in model.layers]
    assert names.index("augment_contrast") < names.index("gray_to_rgb") < names.index("block1_conv1")


def test_the_cnn_levers_add_batch_norm_and_global_pooling_and_keep_the_conv_names():
    original = build_cnn(4, cnn(128, **CNN))
    model = build_cnn(4, cnn(128, **CNN, batch_norm=True, pooling="global_average"))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [c.name for c in convs] == [f"conv{i}" for i in range(1, 6)]
    assert all(not c.use_bias and c.activation.__name__ == "linear" for c in convs), "the ReLU comes after the norm"
    assert [n.name for n in norms] == [f"conv{i}_bn" for i in range(1, 6)]
    names = [layer.name for layer in model.layers]
    assert names.index("conv1") < names.index("pool1") < names.index("conv1_bn") < names.index("conv1_relu")
    assert model.get_layer("conv1_bn").input.shape == (None, 64, 64, 16), "the norm sees the pooled maps"
    assert model.get_layer("gap").output.shape == (None, 256) and "flatten" not in [x.name for x in model.layers]
    # Global pooling drops the flatten's 4x4x256 inputs to the first dense layer: 16 times fewer weights there.
    assert original.get_layer("dense1").kernel.shape == (4 * 4 * 256, 160)
    assert model.get_layer("dense1").kernel.shape == (256, 160)
    assert default_layer(model) == "conv4", "Grad-CAM finds the same layer"
    out = model(np.zeros((2, 128, 128, 1), np.float32), training=False)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
