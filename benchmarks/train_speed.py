"""Training throughput: the real-data settings against the original CNN, and the augmentation's
geometry in one resampling against Keras's three layers.

    python -m benchmarks.train_speed [--image-size 128] [--steps 62] [--epochs 4] [--rounds 2]

Networks, each fit on random 0..255 images held in memory (compute bound: the input pipeline's
own cost is benchmarks.cnn_input's), batch 32, `--steps` an epoch (62: the 1960 training images
of cxr-4class), compiled as `train` compiles them:
- original: the original CNN, params.yaml's defaults (the default run's network and rate);
- real: the [settings for real X-rays](../docs/data.md#the-settings-for-real-x-rays), whose
  augmentation turns, shifts and zooms in one resampling (lungdx.layers.RandomAffine);
- real_keras_geometry (the reference): the same, with Keras's RandomRotation, RandomTranslation
  and RandomZoom in its place, as lungdx built it before.
The three alternate (`--rounds`), a fresh model each fit; each fit's first epoch (tracing) is left
out and its fastest kept (noise on a shared machine only adds time). Also the geometry alone:
milliseconds per batch of 32, ours against the three layers.
"""

from __future__ import annotations

import time

import yaml

from benchmarks.common import ROOT, emit, log, machine, parser, real_xray_settings


def real_settings(image_size: int):
    """The cnn's ModelSettings of the documented real-data command at `image_size` px."""
    from lungdx import params as P

    changes = {k: yaml.safe_load(v) for k, v in real_xray_settings().items() if k != "dataset.source"}
    changes["prepare.image_size"] = image_size
    return P.check(P.with_changes(P.read(ROOT / "params.yaml"), changes)).train


def default_settings(image_size: int):
    from lungdx import params as P

    return P.check(P.with_changes(P.read(ROOT / "params.yaml"), {"prepare.image_size": image_size})).train


def keras_geometry(settings):
    """Keras's three resampling layers with the limits of `settings.augment`: the reference."""
    from keras import layers

    a = settings.augment
    return [
        layers.RandomRotation(a.rotation / 360, fill_mode="constant", fill_value=0.0, seed=settings.seed + 2),
        layers.RandomTranslation(a.shift, a.shift, fill_mode="constant", fill_value=0.0, seed=settings.seed + 3),
        layers.RandomZoom((-a.zoom, a.zoom), fill_mode="constant", fill_value=0.0, seed=settings.seed + 4),
    ]


def build(kind: str, n_classes: int, image_size: int):
    import dataclasses

    import keras

    from lungdx.models import build_cnn, make_deterministic

    settings = default_settings(image_size) if kind == "original" else real_settings(image_size)
    make_deterministic(settings.seed)
    if kind != "real_keras_geometry":
        model = build_cnn(n_classes, settings)
    else:  # the geometry in front, the rest (brightness, contrast, the network) as lungdx builds it
        rest = build_cnn(
            n_classes,
            dataclasses.replace(
                settings, augment=dataclasses.replace(settings.augment, rotation=0.0, shift=0.0, zoom=0.0)
            ),
        )
        inputs = keras.Input((image_size, image_size, 1))
        x = inputs
        for layer in keras_geometry(settings):
            x = layer(x)
        model = keras.Model(inputs, rest(x))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss, metrics=["accuracy"])
    return model, settings.batch_size


def step_ms(kind: str, images, labels, steps: int, epochs: int) -> float:
    import keras

    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model, batch_size = build(kind, labels.shape[1], images.shape[1])
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Clock()], shuffle=False)
    return 1000 * min(times[1:]) / steps


def geometry_ms(images, rounds: int, repeats: int) -> tuple[float, float]:
    """(ours, Keras's three layers): ms per batch, the fastest of `rounds` x `repeats` batches."""
    import tensorflow as tf

    from lungdx.layers import RandomAffine

    settings = real_settings(images.shape[1])
    a = settings.augment
    ours_layer = RandomAffine(a.rotation, a.shift, a.zoom, seed=1)
    three = keras_geometry(settings)
    ours = tf.function(lambda x: ours_layer(x, training=True))

    def reference(x):
        for layer in three:
            x = layer(x, training=True)
        return x

    reference = tf.function(reference)
    best = {"ours": float("inf"), "reference": float("inf")}
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("reference", reference)):
            fn(images).numpy()  # traced once
            for _ in range(repeats):
                start = time.perf_counter()
                fn(images).numpy()
                best[name] = min(best[name], 1000 * (time.perf_counter() - start))
    return best["ours"], best["reference"]


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=128, help="as the default prepare.image_size")
    p.add_argument("--steps", type=int, default=62, help="batches an epoch (62: cxr-4class's training split)")
    p.add_argument("--epochs", type=int, default=4, help="per fit; the first is left out")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    if args.toy:
        args.image_size, args.steps, args.epochs, args.rounds = 32, 2, 2, 1
    if args.epochs < 2 or args.steps < 1 or args.rounds < 1 or args.image_size < 32:
        p.error(
            "--epochs must be at least 2 (the first is left out), --steps and --rounds at least 1, "
            "--image-size at least 32 (the forest's baseline.image_size)"
        )

    import numpy as np
    import tensorflow as tf

    from lungdx.console import import_tensorflow

    import_tensorflow()
    rng = np.random.default_rng(0)
    n = 32 * args.steps
    images = tf.constant(rng.uniform(0, 255, (n, args.image_size, args.image_size, 1)).astype(np.float32))
    labels = tf.constant(np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)])
    kinds = ["original", "real", "real_keras_geometry"]
    ms: dict[str, float] = dict.fromkeys(kinds, float("inf"))
    for r in range(args.rounds):
        for kind in kinds:
            log(f"round {r + 1}: {kind}")
            ms[kind] = min(ms[kind], step_ms(kind, images, labels, args.steps, args.epochs))
    ours_geometry, keras_three = geometry_ms(images[:32], args.rounds, 5 if args.toy else 20)
    result = {
        "benchmark": "train_speed",
        "image_size": args.image_size,
        "batch_size": 32,
        "machine": machine(),
        "step_ms": {k: round(v, 1) for k, v in ms.items()},
        "images_per_second": {k: round(32000 / v, 1) for k, v in ms.items()},
        "real_vs_original_rate": round(ms["original"] / ms["real"], 3),
        "real_vs_keras_geometry_rate": round(ms["real_keras_geometry"] / ms["real"], 3),
        "geometry_ms_per_batch": {"ours": round(ours_geometry, 2), "keras_three_layers": round(keras_three, 2)},
        "geometry_speedup": round(keras_three / ours_geometry, 2),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
