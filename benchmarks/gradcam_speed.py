"""The Grad-CAM pass against a bare batched predict of the same VGG19 on the same images.

    python -m benchmarks.gradcam_speed [--sizes 200,1000] [--image-size 128] [--rounds 1]

In one process, alternating, for each size N: *ours* is GradCam.explain, the gradcam stage's one
pass over the test split (probabilities, and the heatmap of each image's true class); *predict* is
Keras's `model.predict` of the same end-to-end model (weights none) over the
same N images held as float32, batch 32: graph-compiled, the least an inference pass costs.
*Before* (at the smallest size only) is the stage as it was until 26018be: a predict pass
for the probabilities, then an eager GradientTape over the whole model per batch.
Each side is traced on one batch first; the fastest round counts (noise on a shared machine
only adds). The images are a synthetic test split repeated up to N.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import WORK, emit, log, machine, parser, project_settings, synthetic_project


def before(model, layer: str, images: np.ndarray, classes: np.ndarray) -> None:
    """The gradcam stage before commit 26018be: a predict pass, then eager Grad-CAM batches over the whole model."""
    import keras
    import tensorflow as tf

    from lungdx.arrays import predict

    predict(model, images)
    dense = model.layers[-1]
    both = keras.Model(model.inputs, [model.get_layer(layer).output, dense.input])
    for start in range(0, len(images), 32):
        x = tf.convert_to_tensor(np.asarray(images[start : start + 32], np.float32)[..., None])
        with tf.GradientTape() as tape:
            conv, features = both(x, training=False)
            tape.watch(conv)
            logits = tf.matmul(features, dense.kernel) + dense.bias
            score = tf.gather(logits, tf.constant(classes[start : start + 32], tf.int32), axis=1, batch_dims=1)
        grads = tape.gradient(score, conv)
        tf.nn.relu(tf.reduce_sum(grads * conv, axis=-1)).numpy()


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="200,1000", help="test images per measurement, comma-separated")
    p.add_argument("--image-size", type=int, default=128, help="the pipeline's default (prepare.image_size)")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 1 or args.rounds < 1:
        p.error("--sizes and --rounds: at least 1 each")
    if args.toy:
        sizes, args.image_size, args.rounds = [8, 16], 32, 1
    project = synthetic_project(args.workdir or WORK / "gradcam_speed", 25, max(args.image_size, 64), args.image_size)

    from lungdx.arrays import load_split
    from lungdx.heatmaps import GradCam
    from lungdx.models import build_vgg19, make_deterministic

    make_deterministic(239)
    test, labels = load_split(project / "data" / "prepared", "test")
    vgg19 = project_settings(
        {
            "model": "vgg19",
            "models.vgg19.weights": "none",
            "prepare.image_size": args.image_size,
            "baseline.image_size": min(32, args.image_size),
        }
    ).train
    model, _ = build_vgg19(4, vgg19, weights=None)
    cam = GradCam(model)
    warm = np.asarray(test[:4])
    cam.explain(warm, labels[:4])
    model.predict(warm.astype(np.float32)[..., None], batch_size=32, verbose=0)

    per_image: dict[str, dict[int, float]] = {"ours": {}, "predict": {}, "before": {}}
    for n in sizes:
        images = np.resize(np.asarray(test), (n, *test.shape[1:]))  # the split repeated up to n
        classes = np.resize(labels, n)
        as_float = images.astype(np.float32)[..., None]
        sides = {
            # Default arguments bind this size's arrays (each side runs within this iteration anyway).
            "predict": lambda as_float=as_float: model.predict(as_float, batch_size=32, verbose=0),
            "ours": lambda images=images, classes=classes: cam.explain(images, classes),
        }
        if n == min(sizes):
            sides["before"] = lambda images=images, classes=classes: before(model, cam.layer, images, classes)
        for r in range(args.rounds):
            for name, run in sides.items():
                log(f"{n} images, round {r + 1}: {name}")
                start = time.perf_counter()
                run()
                seconds = (time.perf_counter() - start) / n
                per_image[name][n] = min(per_image[name].get(n, np.inf), seconds)
    result = {
        "benchmark": "gradcam_speed",
        "model": "vgg19",
        "layer": cam.layer,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "machine": machine(),
        "ms_per_image": {name: {str(n): round(1000 * s, 2) for n, s in v.items()} for name, v in per_image.items()},
        "ours_vs_predict": {str(n): round(per_image["ours"][n] / per_image["predict"][n], 3) for n in sizes},
        "before_vs_predict": {str(n): round(s / per_image["predict"][n], 3) for n, s in per_image["before"].items()},
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
