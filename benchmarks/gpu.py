"""GPU throughput: VGG19 feature extraction and CNN training, images/s, float32 and mixed precision.

    python -m benchmarks.gpu [--image-size 256] [--images 2048] [--batch-size 64]

For a machine with a GPU (none is needed by the project or its tests). Each
measurement is a fresh model under the Keras dtype policy float32 or mixed_float16,
one warm-up pass (graph tracing, cuDNN autotuning), then timed passes over random
uint8 images made float32 per batch as in training. Without a GPU it reports so and
stops, unless --toy (tiny sizes, on the CPU: only checks that the script runs).
"""

from __future__ import annotations

import time

from benchmarks.common import emit, log, machine, parser, project_settings


def throughput(kind: str, policy: str, n: int, size: int, batch: int, repeats: int) -> float:
    import keras
    import numpy as np

    from lungdx.arrays import batches
    from lungdx.models import build_cnn, make_deterministic, vgg19_base

    keras.mixed_precision.set_global_policy(policy)
    make_deterministic(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    if kind == "vgg19_features":
        inputs, _, pooled = vgg19_base(size, None)
        model = keras.Model(inputs, pooled)
        data = batches(images, None, 0, batch)
        run = lambda: model.predict(data, verbose=0)  # noqa: E731
    else:
        model = build_cnn(4, project_settings({"prepare.image_size": size}).train)
        model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="categorical_crossentropy")
        data = batches(images, labels, 4, batch, shuffle_seed=0)
        run = lambda: model.fit(data, epochs=1, verbose=0)  # noqa: E731
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    seconds = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    return n * repeats / seconds


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.toy:
        args.image_size, args.images, args.batch_size, args.repeats = 32, 16, 8, 1
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
    result = {
        "benchmark": "gpu",
        "gpu": device,
        "machine": machine(),
        "image_size": args.image_size,
        "images": args.images,
        "batch_size": args.batch_size,
    }
    if not gpus and not args.toy:
        log("no GPU visible to TensorFlow: nothing to measure")
        emit(result)
        return result
    for kind in ("vgg19_features", "cnn_training"):
        for policy in ("float32", "mixed_float16"):
            log(f"{kind}, {policy}")
            result[f"{kind}_{policy}_images_per_s"] = round(
                throughput(kind, policy, args.images, args.image_size, args.batch_size, args.repeats), 1
            )
        result[f"{kind}_mixed_speedup"] = round(
            result[f"{kind}_mixed_float16_images_per_s"] / result[f"{kind}_float32_images_per_s"], 3
        )
    emit(result)
    return result


if __name__ == "__main__":
    main()
