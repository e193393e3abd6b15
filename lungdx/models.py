"""The two architectures, both built with the Functional API.

Functional, not Sequential: in Keras 3 a Sequential model has no `model.input`,
and a Grad-CAM sub-model built on a reloaded Sequential model silently gets a
`None` gradient. Both models take a (S, S, 1) float32 image with pixel values
0..255, so one data path feeds either.
"""

from __future__ import annotations

import math
import os
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING

from .console import import_tensorflow
from .errors import LungdxError

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    from collections.abc import Sequence
    from typing import Any

    import keras

    from .params import Augment, ModelSettings

VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
# VGG19's `preprocess_input` ("caffe" mode): BGR order, minus the ImageNet channel means. Our
# three channels are one gray image repeated, so the channel order does not matter.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
VGG19_BLOCKS = ("block5", "block4", "block3", "block2", "block1")


def make_deterministic(seed: int) -> None:
    """Same params + same seed = same weights on CPU. The first TensorFlow call of training and
    feature extraction, so it imports TensorFlow quietly (see lungdx.console)."""
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def distribution_strategy() -> Any:
    """Several visible GPUs: mirror the model on all of them; else the default single device (a
    tf.distribute.Strategy either way)."""
    tf = import_tensorflow()

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def head(x: keras.KerasTensor, n_classes: int, units: int, dropout: float, layers_before: int) -> keras.KerasTensor:
    """Dense ReLU layers of `units`, each with dropout, then the softmax; the original's head."""
    from keras import layers

    for i in range(1, layers_before + 1):
        x = layers.Dense(units, activation="relu", name=f"dense{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


def augmentation(x: keras.KerasTensor, settings: Augment | None, seed: int) -> keras.KerasTensor:
    """The random transformations of models.<name>.augment, as Keras layers: active only while
    training (fit calls them with training=True), the identity when evaluating or predicting.
    `settings`: a params.Augment (or None: none). Each layer draws from its own seed, derived from
    the project's, so a rerun sees the same images. Pixels moved in from outside the image are
    black, like the padding of lungdx.images.
    No horizontal flip unless asked: it swaps the heart's side, which no real frontal X-ray shows."""
    from keras import layers

    if not settings:
        return x
    if settings.flip:
        x = layers.RandomFlip("horizontal", seed=seed + 1, name="augment_flip")(x)
    if settings.rotation or settings.shift or settings.zoom:
        from .layers import RandomAffine  # one resampling for all three

        x = RandomAffine(settings.rotation, settings.shift, settings.zoom, seed=seed + 2, name="augment_geometry")(x)
    if settings.brightness:
        x = layers.RandomBrightness(
            settings.brightness, value_range=(0, 255), seed=seed + 5, name="augment_brightness"
        )(x)
    if settings.contrast:
        x = layers.RandomContrast(settings.contrast, value_range=(0, 255), seed=seed + 6, name="augment_contrast")(x)
    return x


def build_cnn(n_classes: int, settings: ModelSettings) -> keras.Model:
    """The original network: 5 x (Conv 3x3 ReLU + 2x2 max-pool), flatten, 3 x (Dense 160 + Dropout 0.3);
    `settings`: a params.ModelSettings of the cnn. Its levers (docs/models.md): batch norm between
    each conv and its ReLU, and global average pooling in place of flatten."""
    import keras
    from keras import layers

    if settings.filters is None:
        raise ValueError("a cnn's settings name the filters of its conv blocks; these have none")
    inputs = keras.Input((settings.image_size, settings.image_size, 1), name="image")
    x = augmentation(inputs, settings.augment, settings.seed)
    # Centre the pixels on zero: with inputs in 0..1 this deep ReLU stack stays at chance for
    # dozens of epochs on small data; centred inputs give the same network a gradient to follow.
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(x)
    for i, filters in enumerate(settings.filters, start=1):
        x = conv_block(x, filters, i, settings.batch_norm)
    if settings.pooling == "global_average":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    outputs = head(x, n_classes, settings.dense_units, settings.dropout, layers_before=3)
    return keras.Model(inputs, outputs, name="cnn")


def conv_block(x: keras.KerasTensor, filters: int, index: int, batch_norm: bool) -> keras.KerasTensor:
    """One block: a 3x3 conv named conv<index> (Grad-CAM finds it by that name), its ReLU and a
    2x2 max-pool pool<index>. With batch_norm: conv (no bias: the norm's shift takes its place),
    pool, then the norm and the ReLU. Max-pooling commutes with ReLU and with the norm's per-channel
    map while that map increases (its learnt scale positive, as it starts), so this is close to the
    usual conv-norm-ReLU-pool, its statistics taken on a quarter of the values: the
    norm before the pool cost 43 % of the training throughput on 2 CPU cores, after it 8 %
    (docs/performance.md)."""
    from keras import layers

    if not batch_norm:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        return layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
    x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.BatchNormalization(name=f"conv{index}_bn")(x)
    return layers.ReLU(name=f"conv{index}_relu")(x)


def vgg19_base(
    image_size: int, weights: str | None, augment: Augment | None = None, seed: int = 0
) -> tuple[keras.KerasTensor, keras.Model, keras.KerasTensor]:
    """Input, (augmentation,) the 3-channel ImageNet preprocessing, and VGG19 without top built on it.

    Built with `input_tensor=` so the base's layers (block5_conv4, ...) are layers of the
    outer model, reachable for Grad-CAM and for fine-tuning.
    """
    import keras
    from keras import layers
    from keras.applications import VGG19

    if image_size < 32:
        raise ValueError(f"VGG19 takes images of 32 px or more (five 2x2 poolings), not {image_size}")
    inputs = keras.Input((image_size, image_size, 1), name="image")
    gray = augmentation(inputs, augment, seed)
    rgb = layers.Concatenate(name="gray_to_rgb")([gray, gray, gray])
    x = layers.Normalization(mean=IMAGENET_BGR_MEAN, variance=(1.0, 1.0, 1.0), name="vgg_preprocess")(rgb)
    try:
        base = VGG19(include_top=False, weights=weights, input_tensor=x)
    except Exception as exc:
        error = _weights_error(weights, exc)
        if error is None:
            raise
        raise error from exc
    base.trainable = False
    pooled = layers.GlobalAveragePooling2D(name="gap")(base.output)
    return inputs, base, pooled


class WeightsUnavailable(LungdxError):
    """VGG19's weights could not be loaded: the message says why and what to use instead."""


def _weights_error(weights: str | None, exc: Exception) -> WeightsUnavailable | None:
    """What a failure to load VGG19's `weights` means to a user, or None for anything else (a bug
    that must show its traceback). Keras raises a bare Exception for a failed download, with the
    urllib error as its context; a connection that drops, an OSError; a file that is not VGG19's
    no-top weights, OSError or ValueError."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, (urllib.error.URLError, OSError)):
        cause = cause.__cause__ or cause.__context__
    download_failed = cause is not None or str(exc).startswith("URL fetch failure")
    if weights == "imagenet":
        # Keras downloads the ImageNet weights once into KERAS_HOME/models; offline that fails.
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / VGG19_NOTOP
        failed = exc if cause is None else cause
        if cached.is_file() and isinstance(exc, (OSError, ValueError, KeyError)):
            error = WeightsUnavailable(
                f"the cached ImageNet weights at {cached} could not be loaded ({exc}); if the "
                "file is damaged, delete it so that Keras downloads it again, or use none or a "
                "local copy"
            )
        elif download_failed:
            error = WeightsUnavailable(
                f"the ImageNet weights are not cached at {cached} and could not be downloaded "
                f"({type(failed).__name__}: {failed}); use none (random initialisation) or the "
                f"path of a local copy of {VGG19_NOTOP}"
            )
        else:
            return None
    elif isinstance(exc, (OSError, ValueError, KeyError)):  # KeyError: an HDF5 file without a layer's weights
        error = WeightsUnavailable(
            f"{weights}: not VGG19's no-top weights, or unreadable ({exc}); use imagenet, "
            f"none, or a local copy of {VGG19_NOTOP}"
        )
    else:
        return None
    error.__cause__ = exc
    return error


def vgg19_head(pooled: keras.KerasTensor, n_classes: int, settings: ModelSettings) -> keras.KerasTensor:
    """The original head on the pooled features: Dropout, (Dense 160, Dropout) x 2, softmax."""
    from keras import layers

    x = layers.Dropout(settings.dropout, name="dropout0")(pooled)
    return head(x, n_classes, settings.dense_units, settings.dropout, layers_before=2)


def build_vgg19(n_classes: int, settings: ModelSettings, weights: str | None) -> tuple[keras.Model, keras.Model]:
    """The end-to-end VGG19 (base and head) of a params.ModelSettings, with the base's `weights`
    (imagenet, None or a .h5 path); returns it and its base."""
    import keras

    inputs, base, pooled = vgg19_base(settings.image_size, weights, settings.augment, settings.seed)
    model = keras.Model(inputs, vgg19_head(pooled, n_classes, settings), name="vgg19")
    return model, base


def build_head_only(n_features: int, n_classes: int, settings: ModelSettings) -> keras.Model:
    """The VGG19 head alone, trained on cached features; its layer names match build_vgg19's."""
    import keras

    inputs = keras.Input((n_features,), name="features")
    return keras.Model(inputs, vgg19_head(inputs, n_classes, settings), name="vgg19_head")


def unfreeze_last_blocks(base: keras.Model, n_blocks: int) -> None:
    """Make the last n conv blocks of the VGG19 base trainable, for fine-tuning."""
    if not 0 <= n_blocks <= len(VGG19_BLOCKS):
        raise ValueError(f"VGG19 has {len(VGG19_BLOCKS)} conv blocks to unfreeze, not {n_blocks}")
    wanted = VGG19_BLOCKS[:n_blocks]
    base.trainable = n_blocks > 0
    for layer in base.layers:
        layer.trainable = n_blocks > 0 and layer.name.startswith(wanted)


def build_unet(image_size: int, filters: Sequence[int]) -> keras.Model:
    """The lung segmenter (lungdx.segment): a U-Net (Ronneberger et al. 2015), two 3x3 ReLU convs
    per level, `filters` from the top level down (the last is the bottleneck), 2x2 max-pool down,
    2x upsampling and the skip connection up; per pixel, the probability of lung. Takes a (S, S, 1)
    image of 0..255, like the classifiers."""
    import keras
    from keras import layers

    def convs(x: keras.KerasTensor, n: int, name: str) -> keras.KerasTensor:
        x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{name}a")(x)
        return layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{name}b")(x)

    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    skips = []
    for level, n in enumerate(filters[:-1], start=1):
        x = convs(x, n, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = convs(x, filters[-1], "bottom")
    for level, (n, skip) in reversed(list(enumerate(zip(filters[:-1], skips, strict=True), start=1))):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = convs(layers.Concatenate(name=f"skip{level}")([x, skip]), n, f"up{level}_")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="lung")(x)
    return keras.Model(inputs, outputs, name="unet")


def lower_rate_advice(key: str, learning_rate: float) -> str:
    """What to do about a diverging training: the param to lower, with a value to try."""
    import numpy as np

    def plain(x: float) -> str:  # 0.00003, not 3e-05: what to write in params.yaml
        return np.format_float_positional(float(f"{x:.3g}"), trim="-")

    return f"lower {key} (now {plain(learning_rate)}), e.g. to {plain(learning_rate / 10)}, or check the data"


def stop_on_nonfinite_loss(key: str, learning_rate: float) -> keras.callbacks.Callback:
    """A Keras callback that ends the fit at the first batch whose loss is nan or inf, with a
    LungdxError naming the epoch and batch (as Keras counts them in its log, from 1) and the
    learning rate `key` to lower. Keras's own TerminateOnNaN only stops, and a run that
    stopped this way would save the broken model."""
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise LungdxError(
                    f"training diverged: the loss became {float(loss)} in epoch {self.epoch + 1}, "
                    f"batch {batch + 1}; {lower_rate_advice(key, learning_rate)}; no model was saved"
                )

    return StopOnNonFiniteLoss()
