"""The `lungdx` command line for people: predict with a trained model, show what a model file holds.

Installed as `lungdx` (pyproject.toml); `python -m lungdx` runs the same main. The pipeline
itself runs with `dvc repro` (the stage scripts use lungdx.runner, not this).

Exit status: 0 done; 1 some image files could not be read (the others are answered);
2 a bad model file or bad usage; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .console import configure_logging
from .errors import LungdxError

DEFAULT_MODEL = Path("models/model.keras")  # where `dvc repro train` writes it, from the project's folder
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    # -v/-q are taken before or after the command; SUPPRESS keeps a command's parser from
    # overwriting what was given before it with its own default
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show debug lines and TensorFlow's own log lines")
    shared.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars (as LUNGDX_PROGRESS=0 does)")
    parser = argparse.ArgumentParser(prog="lungdx", parents=[shared],
                                     description="Classify chest X-rays with a model trained by the lungdx "
                                                 "pipeline (the pipeline itself runs with: dvc repro).")
    parser.add_argument("--version", action="version", version=f"lungdx {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser("predict", parents=[shared], help="classify X-ray image files",
                                  description="Classify chest X-ray images with a trained lungdx model: a table "
                                              "(or JSON) of the predicted class and each class's probability.")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                         help="PNG, JPEG, BMP or TIFF files, any size, 8 or 16 bit")
    predict.add_argument("--model", type=Path, metavar="PATH",
                         help=f"the trained model file (it carries its class names and input size; default: "
                              f"{DEFAULT_MODEL} in the current folder)")
    predict.add_argument("--gradcam", type=Path, metavar="OUTDIR",
                         help="also write a Grad-CAM overlay PNG per image into OUTDIR")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.set_defaults(run=run_predict)

    info = commands.add_parser("info", parents=[shared], help="show what a model file carries",
                               description="Show what a lungdx model file carries: architecture, classes in "
                                           "output order, input size, preprocessing, the lungdx version that "
                                           "saved it, file size. Reads only its metadata (no TensorFlow).")
    info.add_argument("model", type=Path, metavar="MODEL", help="a .keras file saved by lungdx")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=run_info)
    return parser


def main(argv=None) -> int:
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


def shown(text) -> str:
    """`text` for a terminal line: control characters (a newline or an escape sequence in a
    file or class name) written as escapes, so a name cannot forge or split a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def run_predict(args) -> int:
    from .predict import predict_files

    model = args.model
    if model is None:
        model = DEFAULT_MODEL
        if not model.exists():
            raise LungdxError(f"no model given and there is no {DEFAULT_MODEL} in this folder ({Path.cwd()}); "
                              "pass --model PATH with the trained model file, or train one first (dvc repro train) "
                              "in the project's folder")
    results = predict_files(args.images, model, args.gradcam)
    for r in results:
        if "error" in r:
            log.error(f"{shown(r['path'])}: {r['error']}")
    good = [r for r in results if "error" not in r]
    if args.json:
        print(json.dumps(results, indent=2))
    elif good:
        classes = list(good[0]["probabilities"])
        width = max(len(shown(r["path"])) for r in good)
        print(f"{'image':<{width}}  {'predicted':<16}" + "".join(f"{shown(c):>17}" for c in classes))
        for r in good:
            print(f"{shown(r['path']):<{width}}  {shown(r['predicted']):<16}"
                  + "".join(f"{r['probabilities'][c]:>17.4f}" for c in classes))
    return 1 if len(good) < len(results) else 0


def run_info(args) -> int:
    from .atomic import human_bytes
    from .model_file import read_info  # reads the file's metadata only: no TensorFlow start-up

    info = read_info(args.model)
    size = args.model.stat().st_size
    if args.json:
        print(json.dumps({"path": str(args.model), "file_bytes": size, **info}, indent=2))
        return 0
    pixels = info["input"]
    rows = {"architecture": info.get("architecture", "unknown"),
            "classes": ", ".join(info["classes"]) + "  (in output order)",
            "input": f"{info['image_size']}x{info['image_size']} px, {pixels.get('channels', 1)} channel, "
                     f"{pixels.get('dtype', 'float32')} {'..'.join(map(str, pixels.get('range', [0, 255])))}",
            "preprocessing": f"{pixels['preprocessing']}: {pixels.get('steps', '')}",
            "lungdx version": info.get("lungdx_version", "unknown"),
            "file size": human_bytes(size)}
    print(shown(args.model))
    for name, value in rows.items():
        print(f"  {name:<16}{shown(value)}")
    return 0
