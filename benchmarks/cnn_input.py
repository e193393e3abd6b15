"""CNN training input pipeline: an epoch from data/prepared against the same epoch from memory.

    python -m benchmarks.cnn_input [--per-class 200] [--image-size 128] [--epochs 4] [--rounds 3]

Ours: the training loop's input, `lungdx.arrays.batches` over the memory-mapped uint8
arrays of data/prepared, each batch made float32 on its own. Compute bound: the same
model fit on float32 tensors of the same shape already in memory. One process, the two
alternating (`--rounds`), a fresh model each time; the first epoch of each fit (graph
tracing) is left out. Each side's figure is its fastest epoch: on a shared machine the
noise only ever adds time (epochs of the same fit vary by up to half here), so the
minimum is the estimate of what the pipeline itself costs.
"""

from __future__ import annotations

import time

from benchmarks.common import WORK, emit, log, machine, parser, synthetic_project


def epoch_seconds(fit_once) -> float:
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    fit_once(Clock())
    return min(times[1:])


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=200, help="as the default synthetic run")
    p.add_argument("--image-size", type=int, default=128, help="as the default prepare.image_size")
    p.add_argument("--epochs", type=int, default=4, help="per fit; the first is left out")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.toy:
        args.per_class, args.image_size, args.epochs, args.rounds = 10, 32, 2, 1
    project = synthetic_project(
        args.workdir or WORK / "cnn_input", args.per_class, max(args.image_size, 64), args.image_size
    )

    import keras
    import numpy as np
    import tensorflow as tf

    from lungdx import params
    from lungdx.arrays import batches, load_split, steps_per_epoch
    from lungdx.models import build_cnn, make_deterministic

    cfg = params.load(project / "params.yaml").train
    images, labels = load_split(project / "data" / "prepared", "train")
    n_classes, bs = int(labels.max()) + 1, cfg.batch_size
    x_memory = tf.constant(np.asarray(images, np.float32)[..., None])
    y_memory = tf.constant(np.eye(n_classes, dtype=np.float32)[labels])

    def model():
        make_deterministic(cfg.seed)
        m = build_cnn(n_classes, cfg)
        m.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="categorical_crossentropy", metrics=["accuracy"]
        )
        return m

    ours, bound = [], []
    for r in range(args.rounds):
        log(f"round {r + 1}: from data/prepared")
        ours.append(
            epoch_seconds(
                lambda clock: model().fit(
                    batches(images, labels, n_classes, bs, cfg.seed, epochs=args.epochs),
                    epochs=args.epochs,
                    steps_per_epoch=steps_per_epoch(len(images), bs),
                    verbose=0,
                    callbacks=[clock],
                )
            )
        )
        log(f"round {r + 1}: from memory")
        bound.append(
            epoch_seconds(
                lambda clock: model().fit(
                    x_memory, y_memory, batch_size=bs, shuffle=True, epochs=args.epochs, verbose=0, callbacks=[clock]
                )
            )
        )
    ours_s, bound_s = min(ours), min(bound)
    result = {
        "benchmark": "cnn_input",
        "train_images": int(len(images)),
        "image_size": args.image_size,
        "batch_size": bs,
        "machine": machine(),
        "epoch_seconds_ours": round(ours_s, 3),
        "epoch_seconds_in_memory": round(bound_s, 3),
        "overhead": round(ours_s / bound_s - 1, 4),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
