"""The `lungdx` command line for people: predict with a trained model, show what a model file holds,
check that the committed pipeline reproduces.

Installed as `lungdx` (pyproject.toml); `python -m lungdx` runs the same main. The pipeline
itself runs with `dvc repro` (the stage scripts use lungdx.runner, not this).

Exit status: 0 done; 1 some image files could not be read (the others are answered), or
`verify` found outputs that differ from dvc.lock; 2 a bad model file, bad usage, or a
`verify` that could not run (no project, no committed dvc.lock, a failed dvc repro); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .console import configure_logging
from .errors import LungdxError
from .readable import interval, p_value, score, score_with_interval

if TYPE_CHECKING:
    from collections.abc import Sequence

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers returns

DEFAULT_MODEL = Path("models/model.keras")  # where `dvc repro train` writes it, from the project's folder
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    shared = _shared_options()
    parser = argparse.ArgumentParser(
        prog="lungdx",
        parents=[shared],
        description="Classify chest X-rays with a model trained by the lungdx "
        "pipeline (the pipeline itself runs with: dvc repro).",
    )
    parser.add_argument("--version", action="version", version=f"lungdx {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for add in (_add_predict, _add_external, _add_compare, _add_verify, _add_info):
        add(commands, shared)
    return parser


def _shared_options() -> argparse.ArgumentParser:
    """-v/-q, taken before or after the command; SUPPRESS keeps a command's parser from
    overwriting what was given before it with its own default."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also show debug lines and TensorFlow's own log lines",
    )
    shared.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars (as LUNGDX_PROGRESS=0 does)",
    )
    return shared


def _add_predict(commands: Subcommands, shared: argparse.ArgumentParser) -> None:
    predict = commands.add_parser(
        "predict",
        parents=[shared],
        help="classify X-ray image files",
        description="Classify chest X-ray images with a trained lungdx model: a table "
        "(or JSON) of the predicted class and each class's probability.",
    )
    predict.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG, BMP or TIFF files, any size, 8 or 16 bit"
    )
    predict.add_argument(
        "--model",
        type=Path,
        metavar="PATH",
        help=f"the trained model file (it carries its class names and input size; default: "
        f"{DEFAULT_MODEL} in the current folder)",
    )
    predict.add_argument(
        "--gradcam", type=Path, metavar="OUTDIR", help="also write a Grad-CAM overlay PNG per image into OUTDIR"
    )
    predict.add_argument(
        "--mask",
        type=Path,
        metavar="PATH",
        help="lung masks, for a model trained on images cut to their lungs (prepare.lung_mask "
        "crop or mask), in place of the lungs its own segmenter draws: a mask file for one "
        "image, or a folder of masks named as the images",
    )
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.set_defaults(run=run_predict)


def _add_external(commands: Subcommands, shared: argparse.ArgumentParser) -> None:
    external = commands.add_parser(
        "external",
        parents=[shared],
        help="score a trained model on a dataset it was not trained on",
        description="Score a trained lungdx model on another dataset: accuracy (and macro F1 with two classes or "
        "more) with 95% bootstrap intervals and the calibration error, on the classes the model and "
        "the dataset share; with lung masks, the share of Grad-CAM energy inside the lungs against "
        "the lungs' share of the image. The dataset is read as the download stage reads a source.",
    )
    external.add_argument(
        "source",
        metavar="SOURCE",
        help="a folder or .zip (Kaggle or flat layout), an http(s) URL of a .zip, or kaggle:<owner>/<dataset>",
    )
    external.add_argument(
        "--model",
        type=Path,
        metavar="PATH",
        help=f"the trained model file (default: {DEFAULT_MODEL} in the current folder)",
    )
    external.add_argument(
        "--layer",
        metavar="NAME",
        help="the conv layer for Grad-CAM (default: as the gradcam stage, the last with a 16x16 grid or more)",
    )
    external.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the bootstrap resamples (default: params.yaml's seed in the current "
        "folder, as the external stage uses; 0 without one)",
    )
    external.add_argument(
        "--out", type=Path, metavar="DIR", help="also write DIR/metrics.json (headline numbers) and DIR/details.json"
    )
    external.add_argument("--json", action="store_true", help="print the details as JSON instead of text")
    external.set_defaults(run=run_external)


def _add_compare(commands: Subcommands, shared: argparse.ArgumentParser) -> None:
    compare = commands.add_parser(
        "compare",
        parents=[shared],
        help="is B better than A on the same test images, beyond chance?",
        description="Compare two runs on the same test images, image by image: each one's accuracy and macro "
        "F1, the difference B - A with its 95% paired bootstrap interval and p-value, and McNemar's "
        "exact test. Unlike dvc metrics diff, it says whether a difference is beyond chance.",
    )
    compare.add_argument(
        "a",
        metavar="A",
        help="a predictions file (metrics/plots/predictions.csv), or a git "
        "revision or experiment name (read with dvc from its cache)",
    )
    compare.add_argument("b", metavar="B", help="the same, for the run compared with A")
    compare.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the bootstrap (default: params.yaml's seed in the current folder; 0 without one)",
    )
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")
    compare.set_defaults(run=run_compare)


def _add_verify(commands: Subcommands, shared: argparse.ArgumentParser) -> None:
    verify = commands.add_parser(
        "verify",
        parents=[shared],
        help="rerun the committed pipeline in a scratch clone: does it reproduce dvc.lock?",
        description="Clone this project's last commit into a scratch folder, run dvc repro there from nothing, "
        "and say for each stage whether its outputs are identical to the committed dvc.lock's, "
        "with how far each differing metric moved. Exit 0: all identical; 1: some differ; 2: it "
        "could not run (the error says why).",
    )
    verify.add_argument(
        "targets",
        nargs="*",
        metavar="STAGE",
        help="stages to reproduce, with what they depend on (default: the whole pipeline)",
    )
    verify.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="the folder to make the scratch clone in (default: the project's parent folder, "
        "so relative paths in params.yaml name the same files)",
    )
    verify.add_argument("--keep", action="store_true", help="keep the scratch clone, and say where it is")
    verify.set_defaults(run=run_verify)


def _add_info(commands: Subcommands, shared: argparse.ArgumentParser) -> None:
    info = commands.add_parser(
        "info",
        parents=[shared],
        help="show what a model file carries",
        description="Show what a lungdx model file carries: architecture, classes in "
        "output order, input size, preprocessing, lung focus and the lung "
        "segmenter it carries, the lungdx version that saved it, file size. Reads only its metadata (no TensorFlow).",
    )
    info.add_argument("model", type=Path, metavar="MODEL", help="a .keras file saved by lungdx")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=run_info)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=getattr(args, "verbose", False))
    if getattr(args, "quiet", False):
        os.environ["LUNGDX_PROGRESS"] = "0"
    try:
        return args.run(args)
    except LungdxError as exc:
        log.error(str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted: lungdx stopped; files it wrote so far are complete", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lungdx predict ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


def run_verify(args: argparse.Namespace) -> int:
    from .verify import report, verify

    try:
        checks, commit, kept = verify(Path.cwd(), args.targets, args.workdir, args.keep)
    except KeyboardInterrupt:
        print(
            "interrupted: lungdx verify stopped dvc repro in its scratch clone"
            + (", which is kept" if args.keep else " and removed it")
            + "; nothing of this project changed",
            file=sys.stderr,
        )
        return 130
    print(report(checks, commit))
    if kept is not None:
        print(f"the scratch clone is kept: {kept}")
    return 0 if all(check.identical for check in checks) else 1


def shown(text: object) -> str:
    """`text` for a terminal line: control characters (a newline or an escape sequence in a
    file or class name) written as escapes, so a name cannot forge or split a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def model_path(given: Path | None) -> Path:
    """--model, or the pipeline's model in the current folder; a clear line when there is neither."""
    if given is not None:
        return given
    if not DEFAULT_MODEL.exists():
        raise LungdxError(
            f"no model given and there is no {DEFAULT_MODEL} in this folder ({Path.cwd()}); "
            "pass --model PATH with the trained model file, or train one first (dvc repro train) "
            "in the project's folder"
        )
    return DEFAULT_MODEL


def run_predict(args: argparse.Namespace) -> int:
    from .predict import predict_files

    results = predict_files(args.images, model_path(args.model), args.gradcam, args.mask)
    for r in results:
        if "error" in r:
            log.error(f"{shown(r['path'])}: {r['error']}")
    good = [r for r in results if "error" not in r]
    if args.json:
        print(json.dumps(results, indent=2))
    elif good:
        print("\n".join(_predictions_table(good)))
    return 1 if len(good) < len(results) else 0


def _predictions_table(good: list[dict]) -> list[str]:
    """predict's table: a header, then per image its predicted class and each class's probability."""
    classes = list(good[0]["probabilities"])
    width = max(len(shown(r["path"])) for r in good)
    lungs = any("lungs" in r for r in good)  # lung focus: which lungs each image was cut to
    lines = [
        f"{'image':<{width}}  {'predicted':<16}"
        + "".join(f"{shown(c):>17}" for c in classes)
        + ("  lungs" if lungs else "")
    ]
    for r in good:
        lines.append(
            f"{shown(r['path']):<{width}}  {shown(r['predicted']):<16}"
            + "".join(f"{score(r['probabilities'][c]):>17}" for c in classes)
            + (f"  {r['lungs']}" if lungs else "")
        )
    return lines


def output_folder(folder: Path, source: str) -> Path:
    """--out of `lungdx external`: a folder, made if needed, outside the source (it would be read
    as part of the dataset next time)."""
    source_path = Path(source).expanduser()
    if source_path.exists() and Path(os.path.realpath(folder)).is_relative_to(os.path.realpath(source_path)):
        raise LungdxError(
            f"--out {folder} is inside the source {source}: its files would be read as part of the "
            "dataset next time; write them elsewhere"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LungdxError(f"--out {folder}: cannot be used as a folder ({exc.strerror or exc})") from exc
    return folder


def run_external(args: argparse.Namespace) -> int:
    from .console import progress
    from .external import evaluate_external

    if args.layer is not None and not args.layer.strip():
        raise LungdxError("--layer: give the name of a conv layer of the model, or leave --layer out for the default")
    out = args.out and output_folder(args.out, args.source)  # before the source is read: fails fast
    found = evaluate_external(
        model_path(args.model),
        args.source,
        metrics_path=out and out / "metrics.json",
        details_path=out and out / "details.json",
        seed=bootstrap_seed(args.seed),
        layer=args.layer,
        progress=progress,
    )
    print(json.dumps(found, indent=2) if args.json else "\n".join(_external_text(args.source, found)))
    return 0


def _external_text(source: str, found: dict) -> list[str]:
    """`lungdx external`'s lines for people: each score with its interval, then the Grad-CAM checks."""

    def with_ci(key: str) -> str:
        return score_with_interval(found[key], found.get(f"{key}_ci"))

    lines = [
        f"{shown(source)}: {found['n_images']} images of {', '.join(map(shown, found['classes_scored']))} "
        f"scored ({len(found['skipped'])} files not scored)",
        f"  accuracy          {with_ci('accuracy')}",
    ]
    if "f1_macro" in found:
        lines.append(f"  macro F1          {with_ci('f1_macro')}")
    lines.append(f"  calibration error {score(found['ece'])} (ECE)")
    for cls, row in found["per_class"].items():
        lines.append(
            f"  sensitivity {shown(cls):<17} {score_with_interval(row['sensitivity'], row['sensitivity_ci'])} "
            f"of {row['n']}"
        )
    if "lung_energy_share" in found:
        lines.append(
            f"  Grad-CAM energy inside the lungs {with_ci('lung_energy_share')}; the lungs cover "
            f"{score(found['lung_energy_chance'])} of the image"
        )
    if "pointing_game" in found:
        lines.append(f"  pointing game {score(found['pointing_game'])} (chance {score(found['pointing_chance'])})")
    return lines


def bootstrap_seed(given: int | None) -> int:
    """--seed, else the project's seed (params.yaml in the current folder, as the stages use), else 0."""
    if given is not None:
        if given < 0:
            raise LungdxError(f"--seed {given}: must be 0 or more")
        return given
    from . import params

    seed = params.project_seed()
    return 0 if seed is None else seed


def run_compare(args: argparse.Namespace) -> int:
    from .compare import ALPHA, compare, read_predictions

    found = compare(
        read_predictions(args.a), read_predictions(args.b), seed=bootstrap_seed(args.seed), names=(args.a, args.b)
    )
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, **found}, indent=2))
        return 0
    print(f"A: {shown(args.a)}\nB: {shown(args.b)}\n{found['n_images']} test images, the same in both\n")
    print(f"{'':<10}{'A':>8}{'B':>8}{'B - A':>9}  {'95% interval':<18}p")
    for key, label in (("accuracy", "accuracy"), ("f1_macro", "macro F1")):
        r = found[key]
        print(
            f"{label:<10}{score(r['a']):>8}{score(r['b']):>8}{score(r['difference'], signed=True):>9}  "
            f"{interval(r['lower'], r['upper'], signed=True):<18}{p_value(r['p_value'])}"
        )
    m = found["mcnemar"]
    print(
        f"\nMcNemar (exact): A right and B wrong on {m['b10']} image{'s' * (m['b10'] != 1)}, A wrong and B "
        f"right on {m['b01']}: {p_value(m['p_value'])}"
    )
    verdict = (
        "B's accuracy differs from A's beyond chance" if found["differs"] else "no difference in accuracy beyond chance"
    )
    print(f"{verdict} (McNemar, {ALPHA:.0%} level)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from .atomic import human_bytes
    from .model_file import read_info  # reads the file's metadata only: no TensorFlow start-up

    info = read_info(args.model)
    size = args.model.stat().st_size
    if args.json:
        print(json.dumps({"path": str(args.model), "file_bytes": size, **info}, indent=2))
        return 0
    pixels = info["input"]
    rows = {
        "architecture": info.get("architecture", "unknown"),
        "classes": ", ".join(info["classes"]) + "  (in output order)",
        "input": f"{info['image_size']}x{info['image_size']} px, {pixels.get('channels', 1)} channel, "
        f"{pixels.get('dtype', 'float32')} {'..'.join(map(str, pixels.get('range', [0, 255])))}",
        "preprocessing": f"{pixels['preprocessing']}: {pixels.get('steps', '')}",
        "lung focus": lung_focus_text(pixels["lung_mask"], info["segmenter"]),
        **({"lung segmenter": segmenter_text(info["segmenter"])} if info["segmenter"] else {}),
        "lungdx version": info.get("lungdx_version", "unknown"),
        "file size": human_bytes(size),
    }
    print(shown(args.model))
    for name, value in rows.items():
        print(f"  {name:<16}{shown(value)}")
    return 0


def lung_focus_text(lung_mask: str, segmenter: dict | None) -> str:
    """lungdx info's line on how the model's images are cut to the lungs, and what predict needs."""
    what = {
        "none": "none: the whole X-ray",
        "crop": "crop: cut to the lungs' box",
        "mask": "mask: cut to the lungs, black beyond them",
    }[lung_mask]
    if lung_mask == "none":
        return what
    if segmenter:
        return f"{what}; the lungs are drawn by its own segmenter (--mask only to give them yourself)"
    return f"{what}; predict needs each image's lung mask (--mask): the file carries no segmenter"


def segmenter_text(segmenter: dict) -> str:
    dice = segmenter.get("test_dice")
    return (
        f"U-Net at {segmenter['image_size']}x{segmenter['image_size']} px, learned from "
        f"{segmenter['learned_from']}" + ("" if dice is None else f", test Dice {score(dice)}")
    )
