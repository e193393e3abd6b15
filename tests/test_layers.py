import keras
import numpy as np
import pytest
import tensorflow as tf

from lungdx.layers import RandomAffine


def _bar(n: int, side: int = 64) -> np.ndarray:
    """`n` copies of a white horizontal bar through the centre of a black square."""
    images = np.zeros((n, side, side, 1), np.float32)
    images[:, side // 2 - 2 : side // 2 + 2, 8:-8] = 255
    return images


def _centroid_and_angle(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The bright pixels' centre (row, column) and the angle of their long axis in degrees."""
    rows, cols = np.nonzero(image[..., 0] > 127)
    centre = np.array([rows.mean(), cols.mean()])
    cov = np.cov(np.stack([cols - centre[1], rows - centre[0]]))
    vx, vy = np.linalg.eigh(cov)[1][:, -1]
    return centre, float(np.degrees(np.arctan(vy / vx)))


def test_each_image_gets_its_own_turn_within_the_limit_about_the_centre():
    turned = keras.ops.convert_to_numpy(RandomAffine(rotation=20, seed=1)(_bar(16), training=True))
    found = [_centroid_and_angle(image) for image in turned]
    angles = np.array([angle for _, angle in found])
    assert np.all(np.abs(angles) <= 20.5) and angles.std() > 5  # drawn per image, up to 20 degrees
    assert all(np.allclose(centre, 31.5, atol=0.6) for centre, _ in found)  # about the centre, no shift


def test_a_shift_moves_the_image_at_most_its_share_of_the_side_and_a_zoom_scales_it():
    images = _bar(16)
    shifted = keras.ops.convert_to_numpy(RandomAffine(shift=0.1, seed=2)(images, training=True))
    moves = np.array([_centroid_and_angle(image)[0] - 31.5 for image in shifted])
    assert np.all(np.abs(moves) <= 0.1 * 64 + 0.5) and np.abs(moves).max() > 3
    zoomed = keras.ops.convert_to_numpy(RandomAffine(zoom=0.2, seed=3)(images, training=True))
    widths = np.array([np.count_nonzero(image[32, :, 0] > 127) for image in zoomed])
    assert np.all((widths >= 48 / 1.2 - 1) & (widths <= 48 / 0.8 + 1)) and widths.std() > 1


def test_off_when_not_training_or_at_zero_and_it_saves_with_its_settings(tmp_path):
    images = _bar(2)
    layer = RandomAffine(rotation=10, shift=0.1, zoom=0.1, seed=4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    still = RandomAffine(seed=4)(images, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(still), images, atol=1e-3)
    inputs = keras.Input((64, 64, 1))
    keras.Model(inputs, RandomAffine(5, 0.05, 0.1, seed=9, name="geometry")(inputs)).save(tmp_path / "m.keras")
    config = keras.models.load_model(tmp_path / "m.keras").get_layer("geometry").get_config()
    assert (config["rotation"], config["shift"], config["zoom"], config["seed"]) == (5, 0.05, 0.1, 9)


def test_values_that_would_mirror_or_poison_the_image_are_refused_by_name():
    for kwargs in ({"zoom": 1.0}, {"zoom": 3.0}, {"rotation": float("nan")}, {"shift": float("inf")}, {"shift": -0.1}):
        with pytest.raises(ValueError, match=f"RandomAffine: {next(iter(kwargs))} = "):
            RandomAffine(**kwargs)


def test_images_of_a_size_known_only_when_run_and_no_xla_claimed():
    layer = RandomAffine(rotation=10, shift=0.1, zoom=0.1, seed=5)
    run = tf.function(lambda x: layer(x, training=True), input_signature=[tf.TensorSpec((None, None, None, 1))])
    assert tuple(run(_bar(2, side=40)).shape) == (2, 40, 40, 1)
    assert not layer.supports_jit  # a model holding it trains without XLA even under jit_compile="auto"
