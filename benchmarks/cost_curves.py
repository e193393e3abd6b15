"""Time and peak memory of every stage at three database sizes, fitted and projected.

    python -m benchmarks.cost_curves [--images 100,400,1600] [--epochs 5] [--save docs/cost_curves.json]

For each size: a fresh `git clone` of the committed HEAD on a synthetic database of that many
images (4 classes), default params otherwise (128 px, VGG19 weights none: ImageNet's cannot be
downloaded here), except the CNN's epochs: `--epochs` of them, early stopping off, since the
default's 40 at most would dominate the benchmark's own time; the projection scales the CNN's
per-image training cost to 40 epochs (an upper bound: early stopping may end sooner).
`dvc repro` runs every stage with the CNN, then `dvc exp run -S model=vgg19` the VGG19 ones;
each stage records its wall time (process start to end), TensorFlow start-up and peak resident
memory (LUNGDX_TIMINGS, lungdx.runner).

Per stage and model: a least-squares fit seconds = fixed + per_image x images (and the same
for memory), and its projection to the real database: 9415 images (the pipeline's sample of
2690 per class) and all 21165. `python -m docs.make_cost_curves` draws docs/cost_curves.png
and the table in docs/performance.md from the saved result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.common import (
    WORK,
    dvc_share,
    emit,
    fresh_clone,
    git,
    log,
    machine,
    parser,
    project_settings,
    stage_records,
    synthetic_source,
    timed,
    write_params,
)

REAL_SIZES = {"sampled": 9415, "all": 21165}
# The most epochs the default CNN trains (early stopping may end it sooner).
DEFAULT_CNN_EPOCHS = project_settings({"model": "cnn"}).train.epochs


def fit_line(sizes: list[int], values: list[float]) -> dict:
    """Least squares value = fixed + per_image * size (per_image is per 1000 images in the output)."""
    per_image, fixed = np.polyfit(np.asarray(sizes, float), np.asarray(values, float), 1)
    return {"fixed": round(float(fixed), 3), "per_1000_images": round(float(per_image) * 1000, 3)}


def project(fit: dict, images: int, per_image_scale: float = 1.0) -> float:
    return round(fit["fixed"] + fit["per_1000_images"] * per_image_scale * images / 1000, 1)


MODELS = {"cnn": ["dvc", "repro"], "vgg19": ["dvc", "exp", "run", "-S", "model=vgg19"]}


def measure(workdir: Path, images: int, epochs: int, toy: bool, models=tuple(MODELS)) -> dict:
    """{model: {stage: {seconds, tensorflow_start_seconds, peak_rss_mb}}} at one size; seconds are
    each stage process's wall time, imports included."""
    per_class = images // 4
    source = synthetic_source(workdir / f"source_{per_class}", per_class, 64 if toy else 256)
    clone = fresh_clone(workdir / f"clone_{images}")
    changes = {
        "dataset.source": str(source),
        "sample.per_class": per_class,
        "models.cnn.epochs": epochs,
        "models.cnn.patience": epochs,
        "models.cnn.warmup_epochs": 0,
        "models.vgg19.weights": "none",
    }
    if toy:
        changes.update({"prepare.image_size": 32, "baseline.n_estimators": 10, "models.vgg19.epochs": 1})
    write_params(clone, **changes)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "benchmark baseline")
    out = {}
    for model, cmd in ((m, MODELS[m]) for m in models):
        log(f"{images} images: {' '.join(cmd)}")
        run = timed(cmd, clone, timings=workdir / "timings.jsonl")
        out[model] = {
            name: {
                "seconds": r["process_seconds"],
                "tensorflow_start_seconds": r["tensorflow_start_seconds"],
                "peak_rss_mb": r["peak_rss_mb"],
            }
            for name, r in stage_records(run).items()
        }
        out[model]["dvc (the rest)"] = {"seconds": dvc_share(run)}
        out[model]["total"] = {"seconds": run["seconds"]}
        if model == "cnn":
            git(clone, "add", "-A")
            git(clone, "commit", "-q", "-m", "cnn run")
    return out


def fits(sizes: list[int], runs: list[dict], epochs: int) -> dict:
    """Per model and stage: the fits of seconds and memory, and the projections to the real sizes."""
    out = {}
    for model in runs[0]:
        out[model] = {}
        for stage in runs[0][model]:
            entry = {}
            for what in ("seconds", "peak_rss_mb"):
                if all(what in r[model].get(stage, {}) for r in runs):
                    f = fit_line(sizes, [r[model][stage][what] for r in runs])
                    # The CNN's training was measured at `epochs`; the default runs up to 40.
                    scale = DEFAULT_CNN_EPOCHS / epochs if (model, stage, what) == ("cnn", "train", "seconds") else 1
                    entry[what] = {**f, "projected": {name: project(f, n, scale) for name, n in REAL_SIZES.items()}}
            out[model][stage] = entry
    return out


def dominant(runs: list[dict], sizes: list[int], projected: dict) -> dict:
    """The stage that takes longest, per model, at each measured size and each projected one."""
    out = {}
    for model in runs[0]:
        stages = [s for s in runs[0][model] if s not in ("total", "dvc (the rest)")]
        out[model] = {
            str(n): max(stages, key=lambda s: r[model][s]["seconds"]) for n, r in zip(sizes, runs, strict=True)
        }
        for name in REAL_SIZES:
            out[model][name] = max(stages, key=lambda s: projected[model][s]["seconds"]["projected"][name])
    return out


def totals(fitted: dict) -> dict:
    """Projected minutes of a whole `dvc repro` from scratch per model: VGG19 shares the CNN run's
    data stages (download, sample, prepare) and baseline, then runs its own."""
    shared = ("download", "sample", "prepare", "baseline")
    out = {}
    for model, stages in fitted.items():
        parts = {s: v for s, v in stages.items() if s != "total"}
        if model != "cnn":
            parts |= {s: fitted["cnn"][s] for s in shared if s in fitted["cnn"]}
        out[model] = {
            name: round(sum(v["seconds"]["projected"][name] for v in parts.values()) / 60, 1) for name in REAL_SIZES
        }
    return out


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", default="100,400,1600", help="database sizes, comma-separated (4 classes each)")
    p.add_argument("--epochs", type=int, default=5, help="of the CNN, measured (projected to 40)")
    p.add_argument("--save", type=Path, default=None, help="also write the result to this JSON file")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.images.split(",")]
    models = tuple(MODELS)
    if args.toy:
        # 10 images a class at least: every split gets one. The CNN's run only: the VGG19 one is the
        # same loop with another command, and benchmarks.experiment's toy runs that command.
        sizes, args.epochs, models = [40, 60], 1, ("cnn",)
    if len(set(sizes)) < 2 or min(sizes) < 40:
        p.error(
            "--images: at least two different sizes of 40 images or more (a line needs two points; "
            "every split needs an image of each class)"
        )
    if args.save and not args.save.parent.is_dir():
        p.error(f"--save {args.save}: the folder {args.save.parent} does not exist")
    workdir = args.workdir or WORK / "cost_curves"
    workdir.mkdir(parents=True, exist_ok=True)
    runs = [measure(workdir, n, args.epochs, args.toy, models) for n in sizes]
    fitted = fits(sizes, runs, args.epochs)
    result = {
        "benchmark": "cost_curves",
        "images": sizes,
        "cnn_epochs_measured": args.epochs,
        "cnn_epochs_projected": DEFAULT_CNN_EPOCHS,
        "real_sizes": REAL_SIZES,
        "machine": machine(),
        "measured": {str(n): r for n, r in zip(sizes, runs, strict=True)},
        "fits": fitted,
        "dominant_stage": dominant(runs, sizes, fitted),
        "projected_total_minutes": totals(fitted),
    }
    emit(result)  # first: a failure to save must not lose the measurement
    if args.save:
        from lungdx.atomic import write_text

        write_text(args.save, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
