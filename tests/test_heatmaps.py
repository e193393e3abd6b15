"""Grad-CAM points where the evidence is, for both architectures, also after save and reload."""

import numpy as np
import pytest

from lungdx.arrays import batches, steps_per_epoch
from lungdx.arrays import predict as predict_probs
from lungdx.gradcam import pick_examples
from lungdx.heatmaps import (
    OUTLINE_BGR,
    GradCam,
    colorbar,
    dilate,
    draw_outline,
    energy_inside,
    mask_scores,
    overlay,
    pointing_hits,
    tolerance,
    upsample,
)
from lungdx.models import build_cnn, build_head_only, build_vgg19, make_deterministic
from tests.helpers import settings

SIZE, PATCH = 48, 14


def model_settings(arch: str, image_size: int = SIZE, **fields):
    """The settings of `arch` at image_size px with `fields` (models.<arch>.<field>) as given; the rest as
    params.yaml has them."""
    return settings(
        {
            "model": arch,
            "prepare.image_size": image_size,
            "baseline.image_size": 8,
            "models.vgg19.weights": "none",
            **{f"models.{arch}.{k}": v for k, v in fields.items()},
        }
    ).train


def patch_data(n: int, seed: int):
    """Class 1 has a bright square at a random spot of the upper left quadrant; class 0 has none.
    Returns images (uint8), labels and the patch masks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 120, (n, SIZE, SIZE)).astype(np.uint8)
    masks = np.zeros_like(images)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, SIZE // 2 - PATCH // 2, 2)
        images[i, y : y + PATCH, x : x + PATCH] = 250
        masks[i, y : y + PATCH, x : x + PATCH] = 255
    return images, labels, masks


def fit_quietly(model, x, y, epochs, lr=1e-3):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        batches(x, y, 2, 16, shuffle_seed=0, epochs=epochs),
        steps_per_epoch=steps_per_epoch(len(x), 16),
        shuffle=False,
        epochs=epochs,
        verbose=0,
    )


def assert_points_at_patches(model, images, labels, masks, layer=None):
    probs = predict_probs(model, images)
    assert (probs.argmax(1) == labels).mean() >= 0.95, "the model must first learn the task"
    pos = labels == 1
    cam = upsample(GradCam(model, layer).explain(images[pos], labels[pos]).heatmaps, SIZE)
    hits = pointing_hits(cam, dilate(masks[pos], tolerance(SIZE)))
    assert hits.mean() >= 0.9, f"peak on the patch in {hits.mean():.2f} of images"
    inside = energy_inside(cam, masks[pos])
    assert np.nanmean(inside) > 3 * (masks[pos] > 0).mean(), "energy concentrates on the patch"
    return cam


@pytest.fixture(scope="module")
def data():
    return patch_data(160, 0), patch_data(40, 1)


def test_gradcam_on_a_cnn_points_at_the_patch_also_after_reload(data, tmp_path):
    import keras

    make_deterministic(0)
    (x, y, _), (xt, yt, mt) = data
    model = build_cnn(2, model_settings("cnn", filters=[8, 16, 32], dense_units=32, dropout=0.0))
    fit_quietly(model, x, y, epochs=8)
    before = assert_points_at_patches(model, xt, yt, mt)
    model.save(tmp_path / "cnn.keras")
    reloaded = keras.models.load_model(tmp_path / "cnn.keras")
    after = assert_points_at_patches(reloaded, xt, yt, mt)
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.slow
def test_gradcam_on_vgg19_points_at_the_patch_also_after_reload(data, tmp_path):
    import keras

    make_deterministic(0)
    (x, y, _), (xt, yt, mt) = data
    cfg = model_settings("vgg19", dense_units=32, dropout=0.0)
    model, base = build_vgg19(2, cfg, weights=None)
    # As the pipeline does: the head trained on the frozen base's pooled features, then put on top.
    extractor = keras.Model(model.inputs, model.get_layer("gap").output)
    head = build_head_only(512, 2, cfg)
    fit_quietly(head, extractor.predict(batches(x, None, 0, 32), verbose=0), y, epochs=60, lr=3e-3)
    for layer in head.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    assert GradCam(model).layer == "block2_conv2"  # the last conv layer with a 16x16+ grid at 48 px
    before = assert_points_at_patches(model, xt, yt, mt)
    model.save(tmp_path / "vgg.keras")
    after = assert_points_at_patches(keras.models.load_model(tmp_path / "vgg.keras"), xt, yt, mt)
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_unknown_layer_names_the_layer_and_the_choices():
    from lungdx.errors import LungdxError, ParamError

    model = build_cnn(2, model_settings("cnn", 32, filters=[4, 8], dense_units=4, dropout=0.0))
    with pytest.raises(
        LungdxError, match="Grad-CAM layer 'block5_conv4': not a conv layer of model 'cnn'.*conv1, conv2"
    ):
        GradCam(model, "block5_conv4")
    # params.yaml's gradcam.layer is checked before any work, naming the key and the cnn's conv layers.
    with pytest.raises(ParamError, match="gradcam.layer = 'block5_conv4'.*conv1, conv2"):
        settings({"gradcam.layer": "block5_conv4", "model": "cnn", "models.cnn.filters": [4, 8]})


def test_mask_scores_against_known_heatmaps():
    heat = np.zeros((2, 20, 20), np.float32)
    heat[0, 2, 2] = 1.0  # peak inside image 0's lesion
    heat[1, 15, 15] = 1.0  # peak far from image 1's lesion
    lesions = np.zeros((2, 20, 20), np.uint8)
    lesions[:, 0:5, 0:5] = 255
    lungs = np.full((2, 20, 20), 255, np.uint8)
    scores = mask_scores(heat, np.array([1, 1]), ["Normal", "COVID"], {"masks": lungs, "lesions": lesions}, seed=0)
    assert scores["lung_energy_share"]["overall"] == 1.0
    assert scores["lung_energy_share"]["overall_ci"] == {"lower": 1.0, "upper": 1.0}
    covid = scores["lesions"]["per_class"]["COVID"]
    assert covid["pointing_game"] == 0.5 and covid["energy_in_lesion"] == 0.5
    assert covid["energy_chance"] == 0.0625 and covid["pointing_chance"] > covid["energy_chance"]


def test_examples_include_misclassified_ones_first():
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 1, 0, 1, 1, 1])
    assert pick_examples(y_true, y_pred, 2, 3) == [1, 0, 2, 4, 5]


def test_overlay_is_a_colour_picture_of_the_xray_size():
    gray = np.full((64, 64), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 1
    out = overlay(gray, heat)
    assert out.shape == (64, 64, 3) and out[0, 0].tolist() != out[63, 63].tolist()


def test_the_colour_bar_has_the_overlay_colours_from_no_evidence_to_strongest():
    bar = colorbar(200, 10)
    assert bar.shape == (10, 200, 3) and (bar == bar[0]).all(), "every row the same"
    black = np.zeros((4, 4), np.uint8)
    for heat, column in ((0.0, 0), (1.0, -1)):
        pure = overlay(black, np.full((4, 4), heat, np.float32), alpha=1.0)  # the colormap alone
        assert bar[0, column].tolist() == pure[0, 0].tolist(), heat
    assert bar[0, 0].sum() < 60 < 600 < bar[0, -1].sum(), "dark for no evidence, bright for the strongest"


def test_the_lung_outline_lies_exactly_on_the_mask_boundary():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:30, 8:20] = 255
    mask[20:38, 25:40] = 255  # touches the image's right edge: the outline runs along it
    inside = mask > 0
    padded = np.pad(inside, 1)
    all_neighbours_in = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = inside & ~all_neighbours_in
    gray = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint8)
    picture = overlay(gray, np.random.default_rng(1).random((5, 5)).astype(np.float32))
    drawn = draw_outline(picture, mask)
    assert (drawn[boundary] == OUTLINE_BGR).all()
    np.testing.assert_array_equal(drawn[~boundary], picture[~boundary])
    assert boundary[:, 39].sum() == 18 and not boundary[10, 12], "the edge counts as outside; the inside stays"


def test_a_small_mask_is_outlined_where_it_lies_on_a_larger_picture():
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255  # pixels 4..11 of 16: 64..191 of 256
    drawn = draw_outline(np.zeros((256, 256, 3), np.uint8), mask)
    ys, xs = np.nonzero((drawn == OUTLINE_BGR).all(axis=2))
    assert abs(ys.min() - 64) <= 8 and abs(ys.max() - 191) <= 8 and abs(xs.min() - 64) <= 8
    assert len(ys) < 4 * 140, "one pixel wide"


def test_a_model_with_a_path_around_the_layer_gets_the_same_heatmaps_as_a_plain_tape():
    """A skip connection: the head is reached both through and around conv2, so the model cannot
    be split at conv2; GradCam then tapes the whole model, with the same result as eager Grad-CAM."""
    import keras
    import tensorflow as tf

    make_deterministic(3)
    inputs = keras.Input((16, 16, 1))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    c2 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(c1)
    x = keras.layers.Flatten()(keras.layers.Add()([c1, c2]))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(x))
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16)).astype(np.uint8)
    classes = np.array([0, 1, 2, 1, 0])
    heat = GradCam(model, "conv2").heatmaps(images, classes)

    both = keras.Model(model.inputs, [model.get_layer("conv2").output, model.layers[-2].output])
    dense = model.layers[-1]
    x = tf.constant(images.astype(np.float32)[..., None])
    with tf.GradientTape() as tape:
        maps, features = both(x)
        tape.watch(maps)
        logits = features @ dense.kernel + dense.bias
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    cam = tf.nn.relu(tf.reduce_sum(tape.gradient(score, maps) * maps, axis=-1)).numpy()
    peak = cam.reshape(5, -1).max(1)[:, None, None]
    np.testing.assert_allclose(heat, np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0), atol=1e-5)
