"""lungdx's own Keras layer: the random geometry of augmentation in one resampling.

Imported where a network is built, trained or loaded: importing it registers the layer with
Keras, so a saved model file that holds one loads again (lungdx.model_file.load_model).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lungdx")
class RandomAffine(keras.layers.Layer):
    """Turn each image by up to `rotation` degrees, shift it by up to `shift` of its side along
    each axis and scale it by up to `zoom` in or out, each drawn uniformly and anew per image and
    batch, in one bilinear resampling about the image's centre. Pixels moved in from outside are
    black. Only while training (fit passes training=True); the identity otherwise.

    Why not Keras's RandomRotation, RandomTranslation and RandomZoom: each resamples the whole
    batch, so the three cost three resamplings (2.7x the time of this one on 2 CPU cores,
    benchmarks/train_speed.py) and blur the image three times."""

    def __init__(
        self, rotation: float = 0.0, shift: float = 0.0, zoom: float = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        # A zoom of 1 or more could scale by 0 or less (a mirrored image: the heart on the right).
        for name, value, below in (("rotation", rotation, 180.0), ("shift", shift, 1.0), ("zoom", zoom, 1.0)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < below:
                raise ValueError(f"RandomAffine: {name} = {value!r} is not allowed: a number from 0 to below {below:g}")
        self.rotation, self.shift, self.zoom, self.seed = float(rotation), float(shift), float(zoom), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False  # XLA cannot compile the resampling op, as for Keras's own random layers

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        shape = ops.shape(images)  # height and width may be known only when run
        n, height, width = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def draw(limit: float) -> Any:
            return keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)

        angle, scale = draw(math.radians(self.rotation)), 1.0 + draw(self.zoom)
        dx, dy = draw(self.shift) * width, draw(self.shift) * height
        # Output pixel p samples the input at c + scale * R(angle) (p - c) - (dx, dy), c the centre.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        a0, a1 = scale * ops.cos(angle), -scale * ops.sin(angle)
        b0, b1 = -a1, a0
        a2, b2 = cx - a0 * cx - a1 * cy - dx, cy - b0 * cx - b1 * cy - dy
        zeros = ops.zeros_like(angle)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "shift": self.shift,
            "zoom": self.zoom,
            "seed": self.seed,
        }
