"""The prepare stage at the real run's size: images per second on 1 and on 2 cores.

    python -m benchmarks.prepare_speed [--per-class 2690] [--source-size 299] [--image-size 256]

9415 images as the real sample (2690 each of COVID, Lung_Opacity, Normal and 1345 Viral
Pneumonia, as in the database), synthetic 299x299 PNGs with a lung mask each, like the
Kaggle files (no lesion masks: those only our synthetic data have), resized to 256 (the
original's size). The stage runs as a whole process, once pinned to
one core (one worker) and once to two; the page cache is warm for both.
"""

from __future__ import annotations

import json
import sys

from benchmarks.common import WORK, emit, log, machine, parser, synthetic_project, timed

REAL_SHAPE = WORK / "real_shape"  # shared with benchmarks.train_memory


def real_shape_project(args):
    if args.toy:
        args.per_class, args.source_size, args.image_size = 20, 64, 32
    viral = args.per_class // 2
    return synthetic_project(
        args.workdir or REAL_SHAPE,
        args.per_class,
        args.source_size,
        args.image_size,
        drop={"Viral Pneumonia": viral},
        kaggle_like=True,
    )


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=2690, help="Viral Pneumonia gets half, as in the database")
    p.add_argument("--source-size", type=int, default=299, help="side of the source PNGs (the database's)")
    p.add_argument("--image-size", type=int, default=256)
    args = p.parse_args(argv)
    project = real_shape_project(args)
    meta = json.loads((project / "data" / "prepared" / "meta.json").read_text())
    n = sum(sum(c.values()) for c in meta["counts"].values())
    seconds = {}
    for cores in (2, 1):
        log(f"prepare on {cores} core(s): {n} images")
        seconds[cores] = timed([sys.executable, "-m", "stages.prepare"], project, cores=cores)["seconds"]
    result = {
        "benchmark": "prepare_speed",
        "images": n,
        "source_size": args.source_size,
        "image_size": args.image_size,
        "machine": machine(),
        "seconds_1_core": seconds[1],
        "seconds_2_cores": seconds[2],
        "images_per_second_2_cores": round(n / seconds[2], 1),
        "speedup_1_to_2_cores": round(seconds[1] / seconds[2], 3),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
