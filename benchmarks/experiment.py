"""A user's whole `dvc exp run -S model=vgg19` against the original approach on the same images.

    python -m benchmarks.experiment [--images 200,1000] [--image-size 256] [--epochs 6]

For each size: a fresh `git clone` of the committed HEAD whose data source is a synthetic
database of that many images (4 classes), weights none (ImageNet's cannot be downloaded here),
6 epochs. Setup, untimed: `dvc repro baseline` (the data stages and the forest) and a commit of
dvc.lock, as a user has before trying VGG19; the CNN's own stages are left out of the setup because
switching the model reruns features, train, evaluate and gradcam whether or not they ran before.
Ours, timed: `dvc exp run -S model=vgg19` through dvc, which
reruns features, train, evaluate and gradcam; each stage records its own time, TensorFlow
start-up and peak memory (LUNGDX_TIMINGS), and what is left of the wall time is dvc's.
Original (benchmarks.reference vgg19): the notebook's approach, the end-to-end model fit over
the images for the same epochs, then evaluated; it draws no heatmaps, so ours does more.
Benchmark vgg19_transfer compares three of these stages run by hand; this one is what a user
runs and waits for, dvc and Grad-CAM included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.common import (
    WORK,
    dvc_share,
    emit,
    fresh_clone,
    git,
    log,
    machine,
    parser,
    stage_records,
    synthetic_source,
    timed,
    write_params,
)


def settings(source: Path, per_class: int, image_size: int, epochs: int) -> dict:
    return {
        "dataset.source": str(source),
        "sample.per_class": per_class,
        "prepare.image_size": image_size,
        "models.cnn.epochs": 1,
        "models.cnn.warmup_epochs": 0,
        "models.vgg19.weights": "none",
        "models.vgg19.epochs": epochs,
        "models.vgg19.patience": epochs,
        "models.vgg19.warmup_epochs": 0,
    }


def one_size(workdir: Path, images: int, image_size: int, epochs: int) -> dict:
    per_class = images // 4
    source = synthetic_source(workdir / f"source_{per_class}_{max(image_size, 64)}", per_class, max(image_size, 64))
    clone = fresh_clone(workdir / f"clone_{images}")
    write_params(clone, **settings(source, per_class, image_size, epochs))
    log(f"{images} images: setup, dvc repro baseline (the data stages)")
    timed(["dvc", "repro", "baseline"], clone)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "benchmark baseline")
    log(f"{images} images: ours, dvc exp run -S model=vgg19")
    ours = timed(["dvc", "exp", "run", "-S", "model=vgg19"], clone, timings=workdir / f"timings_{images}.jsonl")
    # The reference reads params.yaml as it stands; dvc leaves the workspace's as it was run, but say it.
    write_params(clone, **settings(source, per_class, image_size, epochs), model="vgg19")
    log(f"{images} images: original, fit end to end then evaluate")
    original = timed([sys.executable, "-m", "benchmarks.reference", "vgg19"], clone)
    stages = {
        name: {k: r[k] for k in ("process_seconds", "tensorflow_start_seconds", "peak_rss_mb")}
        for name, r in stage_records(ours).items()
    }
    return {
        "images": images,
        "test_images": int(json.loads((clone / "reports" / "eval.json").read_text())["n_test"]),
        "ours_seconds": ours["seconds"],
        "stages": stages,
        "dvc_seconds": dvc_share(ours),
        "tensorflow_start_seconds": round(sum(s["tensorflow_start_seconds"] for s in stages.values()), 2),
        "original_seconds": original["seconds"],
        "original_peak_rss_mb": original["peak_rss_mb"],
        "speedup": round(original["seconds"] / ours["seconds"], 2),
    }


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", default="200,1000", help="database sizes, comma-separated (4 classes each)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6, help="as the original")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.images.split(",")]
    if args.toy:
        sizes, args.image_size, args.epochs = [40], 32, 1
    workdir = args.workdir or WORK / "experiment"
    workdir.mkdir(parents=True, exist_ok=True)
    runs = [one_size(workdir, n, args.image_size, args.epochs) for n in sizes]
    result = {
        "benchmark": "experiment",
        "image_size": args.image_size,
        "epochs": args.epochs,
        "machine": machine(),
        "runs": runs,
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
