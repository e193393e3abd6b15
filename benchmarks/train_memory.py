"""Peak memory of training at the real run's shape: our train stage against the original approach.

    python -m benchmarks.train_memory [--per-class 2690] [--image-size 256] [--epochs 1]

The data of benchmarks.prepare_speed (9415 images at 256x256, 4 classes). Ours: the
train stage (model cnn) as a whole process; the arrays stay uint8 and memory-mapped,
each batch becomes float32 alone. Original: the same CNN fit on the whole set held as
float32 (benchmarks.reference cnn). Peak RSS of each process from wait4, as
/usr/bin/time -v reports it. One epoch each: the peak comes with the first one.
"""

from __future__ import annotations

import sys

from benchmarks.common import emit, log, machine, parser, timed, write_params
from benchmarks.prepare_speed import real_shape_project
from lungdx.arrays import load_split


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=2690, help="Viral Pneumonia gets half, as in the database")
    p.add_argument("--source-size", type=int, default=299)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args(argv)
    project = real_shape_project(args)
    write_params(
        project,
        **{
            "dataset.source": str(project / "source"),
            "prepare.image_size": args.image_size,
            "model": "cnn",
            "models.cnn.epochs": args.epochs,
            "models.cnn.warmup_epochs": 0,
        },
    )
    log("ours: stage train")
    ours = timed([sys.executable, "-m", "stages.train"], project)
    log("original: the whole set as float32, then fit")
    original = timed([sys.executable, "-m", "benchmarks.reference", "cnn"], project)
    n = len(load_split(project / "data" / "prepared", "train")[1])
    float32_gb = (
        sum(len(load_split(project / "data" / "prepared", s)[1]) for s in ("train", "val", "test"))
        * args.image_size**2
        * 4
        / 1e9
    )
    result = {
        "benchmark": "train_memory",
        "train_images": n,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "machine": machine(),
        "dataset_as_float32_gb": round(float32_gb, 3),
        "peak_rss_mb_ours": ours["peak_rss_mb"],
        "peak_rss_mb_original": original["peak_rss_mb"],
        "seconds_ours": ours["seconds"],
        "seconds_original": original["seconds"],
        "rss_ratio": round(ours["peak_rss_mb"] / original["peak_rss_mb"], 3),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
