"""`python -m lungdx`: the command line for people (the stage scripts use lungdx.runner)."""

from __future__ import annotations

import sys

from .errors import LungdxError


def predict_main(argv=None) -> int:
    """python -m lungdx predict IMAGE [IMAGE ...] [--model models/model.keras] [--gradcam DIR] [--json]"""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m lungdx predict",
                                     description="Classify chest X-ray images with a trained lungdx model.")
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files, any size, 8 or 16 bit")
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"),
                        help="the trained model file (it carries its class names and input size; default: %(default)s)")
    parser.add_argument("--gradcam", type=Path, metavar="OUTDIR",
                        help="also write a Grad-CAM overlay PNG per image into OUTDIR")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    from .predict import predict_files

    try:
        results = predict_files(args.images, args.model, args.gradcam)
    except LungdxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        if "error" in r:
            print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
    good = [r for r in results if "error" not in r]
    if args.json:
        print(json.dumps(results, indent=2))
    elif good:
        classes = list(good[0]["probabilities"])
        width = max(len(str(r["path"])) for r in good)
        print(f"{'image':<{width}}  {'predicted':<16}" + "".join(f"{c:>17}" for c in classes))
        for r in good:
            print(f"{r['path']:<{width}}  {r['predicted']:<16}"
                  + "".join(f"{r['probabilities'][c]:>17.4f}" for c in classes))
    return 1 if len(good) < len(results) else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "predict":
        print("usage: python -m lungdx predict IMAGE [IMAGE ...] [--model M] [--gradcam DIR] [--json]\n"
              "(the pipeline itself runs with: dvc repro)", file=sys.stderr)
        return 2
    return predict_main(argv[1:])
