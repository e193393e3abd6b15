"""VGG19 frozen-base transfer learning: our stages against the original approach and the floor.

    python -m benchmarks.vgg19_transfer [--per-class 75] [--image-size 256] [--epochs 6]

Ours: the stages features (base once per image), train (head on cached features) and
evaluate, each a whole process as `dvc repro` runs them. Original: one process that
fits the end-to-end model over the images for the same epochs, then evaluates
(benchmarks.reference vgg19). Floor: one bare predict pass of the base over every
image (benchmarks.reference floor). Same synthetic images, same seed, weights none
(ImageNet weights cannot be downloaded here; they do not change the arithmetic).
"""

from __future__ import annotations

import sys

from benchmarks.common import WORK, emit, log, machine, parser, synthetic_project, timed

OUR_STAGES = ("features", "train", "evaluate")


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=75, help="synthetic images per class (4 classes)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6, help="as the original")
    args = p.parse_args(argv)
    if args.toy:
        args.per_class, args.image_size, args.epochs = 10, 32, 1
    project = synthetic_project(
        args.workdir or WORK / "vgg19_transfer",
        args.per_class,
        max(args.image_size, 64),
        args.image_size,
        model="vgg19",
        **{
            "models.vgg19.weights": "none",
            "models.vgg19.epochs": args.epochs,
            "models.vgg19.patience": args.epochs,
            "models.vgg19.warmup_epochs": 0,
        },
    )
    log("floor: one bare predict pass of the base")
    floor = timed([sys.executable, "-m", "benchmarks.reference", "floor"], project)
    ours = {}
    for stage in OUR_STAGES:
        log(f"ours: stage {stage}")
        ours[stage] = timed([sys.executable, "-m", f"stages.{stage}"], project)
    log("original: fit end to end, then evaluate")
    original = timed([sys.executable, "-m", "benchmarks.reference", "vgg19"], project)

    ours_total = sum(r["seconds"] for r in ours.values())
    result = {
        "benchmark": "vgg19_transfer",
        "images": 4 * args.per_class,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "machine": machine(),
        "ours_seconds": {stage: r["seconds"] for stage, r in ours.items()} | {"total": round(ours_total, 2)},
        "original_seconds": original["seconds"],
        "floor_seconds": floor["seconds"],
        "speedup_vs_original": round(original["seconds"] / ours_total, 2),
        "features_vs_floor": round(ours["features"]["seconds"] / floor["seconds"], 3),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
