"""A user's whole `dvc exp run -S model=vgg19` against the original approach on the same images.

    python -m benchmarks.experiment [--images 200,1000] [--image-size 256] [--epochs 6]

For each size: a fresh `git clone` of the committed HEAD whose data source is a synthetic
database of that many images (4 classes), weights none (ImageNet's cannot be downloaded here),
6 epochs. Setup, untimed: `dvc repro` as committed (the CNN, 1 epoch) and a commit of dvc.lock,
as a user has before trying VGG19. Ours, timed: `dvc exp run -S model=vgg19` through dvc, which
reruns features, train, evaluate and gradcam; each stage records its own time, TensorFlow
start-up and peak memory (LUNGDX_TIMINGS), and what is left of the wall time is dvc's.
Original (benchmarks.reference vgg19): the notebook's approach, the end-to-end model fit over
the images for the same epochs, then evaluated; it draws no heatmaps, so ours does more.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import WORK, emit, log, machine, parser, timed, write_params


def settings(source: Path, per_class: int, image_size: int, epochs: int) -> dict:
    return {"dataset.source": str(source), "sample.per_class": per_class, "prepare.image_size": image_size,
            "models.cnn.epochs": 1, "models.cnn.warmup_epochs": 0, "models.vgg19.weights": "none",
            "models.vgg19.epochs": epochs, "models.vgg19.patience": epochs, "models.vgg19.warmup_epochs": 0}


def git(clone: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@localhost", *args],
                   cwd=clone, check=True, capture_output=True)


def one_size(workdir: Path, images: int, image_size: int, epochs: int) -> dict:
    from benchmarks.common import ROOT
    from lungdx.synthetic import generate_dataset

    per_class = images // 4
    source = workdir / f"source_{per_class}_{max(image_size, 64)}"
    if not (source / "done").is_file():
        log(f"making {images} synthetic X-rays in {source}")
        shutil.rmtree(source, ignore_errors=True)
        generate_dataset(source, per_class, 239, max(image_size, 64))
        (source / "done").write_text("")
    clone = workdir / f"clone_{images}"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    write_params(clone, **settings(source, per_class, image_size, epochs))
    log(f"{images} images: setup, dvc repro (cnn, 1 epoch)")
    timed(["dvc", "repro"], clone)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "benchmark baseline")
    log(f"{images} images: ours, dvc exp run -S model=vgg19")
    ours = timed(["dvc", "exp", "run", "-S", "model=vgg19"], clone, timings=workdir / f"timings_{images}.jsonl")
    write_params(clone, **settings(source, per_class, image_size, epochs), model="vgg19")
    log(f"{images} images: original, fit end to end then evaluate")
    original = timed([sys.executable, "-m", "benchmarks.reference", "vgg19"], clone)
    stages = {s["stage"]: {k: s[k] for k in ("process_seconds", "tensorflow_start_seconds", "peak_rss_mb")}
              for s in ours["stages"]}
    in_stages = sum(s["process_seconds"] for s in stages.values())
    return {"images": images, "test_images": int(json.loads((clone / "reports" / "eval.json").read_text())["n_test"]),
            "ours_seconds": ours["seconds"], "stages": stages,
            "dvc_seconds": round(ours["seconds"] - in_stages, 2),
            "tensorflow_start_seconds": round(sum(s["tensorflow_start_seconds"] for s in stages.values()), 2),
            "original_seconds": original["seconds"], "original_peak_rss_mb": original["peak_rss_mb"],
            "speedup": round(original["seconds"] / ours["seconds"], 2)}


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
    result = {"benchmark": "experiment", "image_size": args.image_size, "epochs": args.epochs, "machine": machine(),
              "runs": runs}
    emit(result)
    return result


if __name__ == "__main__":
    main()
