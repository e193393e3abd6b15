"""Peak memory with decompression bombs among the inputs: sample + prepare, and predict.

    python -m benchmarks.image_bombs [--images 100] [--source-size 299] [--image-size 128] [--rounds 3]

100 good synthetic X-rays (299x299 PNGs with a lung mask each, like the database's files)
in the raw layout, then the same with 1 and with 10 bombs added: 30000x30000 black 8-bit
PNGs (tests.helpers.png_bomb), 0.9 MB on disk and 900 MB decoded. Each measurement is a
fresh child process -- `sample` then `prepare`, or `python -m lungdx predict` (in-process
`lungdx.cli.main`, so the exit status can be checked) -- and its peak RSS, with that of any
worker it waited for, comes from wait4 (common.timed), as /usr/bin/time -v reports it
(the same figure as getrusage(RUSAGE_CHILDREN).ru_maxrss after one child). The runs with
limits alternate for --rounds rounds; each figure is the median of its rounds.

The model for predict: a tiny CNN trained for one epoch by lungdx.train on the good run's
data/prepared, in a child of its own. "Before" figures, for the record: the bomb decoded by
a bare cv2.imdecode, and the 1-bomb runs with lungdx's limits lifted (MAX_PIXELS and
MAX_FILE_BYTES set to infinity in the child), which is what every stage did before them.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

from benchmarks.common import WORK, emit, log, machine, parser, timed, write_params

LIFT_LIMITS = "import lungdx.images as images; images.MAX_PIXELS = images.MAX_FILE_BYTES = float('inf'); "


def child(code: str, *args, cwd: Path, limits: bool = True) -> dict:
    """Run `code` (with sys.argv[1:] = args) in a fresh Python process: its seconds and peak RSS."""
    return timed([sys.executable, "-c", ("" if limits else LIFT_LIMITS) + code, *map(str, args)], cwd)


SAMPLE_PREPARE = """
import sys
from lungdx.prepare import prepare
from lungdx.sample import sample
raw, out, per_class, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from lungdx.params import PrepareSettings, SampleSettings, SegmentSettings
from lungdx.segment import segment
sample(SampleSettings(seed=239, classes=(), per_class=per_class, val_size=0.1, test_size=0.2), raw, out + '/sampled')
segment(SegmentSettings(seed=239, lung_mask='none', train_source='', image_size=128, epochs=1, batch_size=1,
                        learning_rate=0.001, patience=1, filters=(16, 32), max_train_images=10, val_size=0.1,
                        test_size=0.2), out + '/sampled/manifest.csv', raw, out + '/segmented',
        out + '/segment.json', out + '/segment_details.json', out + '/segment_images')
prepare(PrepareSettings(image_size=size, lung_mask='none'), out + '/sampled/manifest.csv', raw, out + '/segmented',
        out + '/prepared')
"""

TRAIN = """
from lungdx import params
from lungdx.train import train
train(params.load().train, 'prepared', 'features', 'models/model.keras', 'dvclive')
"""

PREDICT = """
import sys
from lungdx.cli import main
model, expected, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sys.exit(0 if main(['predict', *files, '--model', model, '--json']) == expected else 3)
"""

DECODE = """
import sys
import cv2, numpy as np
img = cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_UNCHANGED)
assert img is not None and img.shape == (int(sys.argv[2]),) * 2, img
"""


def raw_trees(workdir: Path, images: int, source_size: int, bomb_side: int) -> dict[int, Path]:
    """raw/ trees of `images` good X-rays plus 0, 1 and 10 bombs (in COVID/images); reused when present."""
    from lungdx.synthetic import CLASSES, generate_dataset
    from tests.helpers import png_bomb

    key = {"images": images, "source_size": source_size, "bomb_side": bomb_side}
    done = workdir / "setup.json"
    trees = {n: workdir / f"raw-{n}-bombs" for n in (0, 1, 10)}
    if not (done.is_file() and json.loads(done.read_text()) == key):
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"making {images} synthetic {source_size}px X-rays with lung masks in {trees[0]}")
        generate_dataset(trees[0], images // len(CLASSES), 239, source_size)
        for folder in trees[0].glob("*/lesions"):  # the Kaggle files have none
            shutil.rmtree(folder)
        for n in (1, 10):
            shutil.copytree(trees[0], trees[n])
            for k in range(n):
                png_bomb(trees[n] / "COVID" / "images" / f"bomb-{k + 1}.png", side=bomb_side)
        done.write_text(json.dumps(key))
    return trees


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="good images, split evenly over the 4 classes")
    p.add_argument("--source-size", type=int, default=299, help="side of the good PNGs (the database's)")
    p.add_argument("--image-size", type=int, default=128, help="prepare.image_size (the default)")
    p.add_argument("--bomb-side", type=int, default=30000)
    p.add_argument("--rounds", type=int, default=3, help="of the runs with limits; each figure is the median")
    args = p.parse_args(argv)
    if args.toy:  # a bomb just over the limit, so the runs without limits decode it in a second
        args.images, args.source_size, args.image_size, args.bomb_side, args.rounds = 40, 64, 32, 6100, 1
    workdir = args.workdir or WORK / "image_bombs"
    trees = raw_trees(workdir, args.images, args.source_size, args.bomb_side)
    bomb = trees[1] / "COVID" / "images" / "bomb-1.png"
    runs: dict[str, list[dict]] = {}

    def measure(name: str, code: str, *child_args, cwd: Path = workdir, limits: bool = True) -> None:
        runs.setdefault(name, []).append(child(code, *child_args, cwd=cwd, limits=limits))

    def sample_prepare(raw: Path, out: Path, name: str, limits: bool = True) -> None:
        shutil.rmtree(out, ignore_errors=True)
        measure(name, SAMPLE_PREPARE, raw, out, args.images // 4, args.image_size, limits=limits)

    log(f"before: cv2.imdecode of one {args.bomb_side}x{args.bomb_side} bomb ({bomb.stat().st_size} bytes)")
    measure("decode_bomb_cv2_imdecode", DECODE, bomb, args.bomb_side)
    log("before: sample + prepare with 1 bomb, limits lifted")
    sample_prepare(trees[1], workdir / "out-unlimited", "sample_prepare_1_bomb_without_limits", limits=False)
    assert "bomb-1.png" in (workdir / "out-unlimited" / "sampled" / "manifest.csv").read_text()  # sampled
    for round_ in range(1, args.rounds + 1):  # alternating, so a drift of the machine hits all alike
        for n, raw in trees.items():
            log(f"round {round_}/{args.rounds}: sample + prepare, {args.images} good images + {n} bomb(s)")
            sample_prepare(raw, workdir / f"out-{n}-bombs", f"sample_prepare_{n}_bomb" + "s" * (n != 1))
            skipped = (workdir / f"out-{n}-bombs" / "sampled" / "skipped.csv").read_text()
            assert skipped.count("too large to decode safely") == n, skipped

    model_dir = workdir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(workdir / "out-0-bombs" / "prepared", model_dir / "prepared")
    write_params(
        model_dir,
        **{
            "prepare.image_size": args.image_size,
            "model": "cnn",
            "models.cnn.epochs": 1,
            "models.cnn.warmup_epochs": 0,
            "models.cnn.filters": [8, 16],
            "models.cnn.dense_units": 16,
        },
    )
    log("training the tiny CNN for predict (1 epoch)")
    child(TRAIN, cwd=model_dir)
    model = model_dir / "models" / "model.keras"
    good = sorted(trees[0].glob("*/images/*.png"))
    log("before: predict with 1 bomb, limits lifted (exit status 0: the bomb is decoded and classified)")
    measure("predict_1_bomb_without_limits", PREDICT, model, 0, *good, bomb, limits=False)
    for round_ in range(1, args.rounds + 1):
        log(f"round {round_}/{args.rounds}: predict, {len(good)} good images, then + 1 bomb (exit status 1)")
        measure("predict_0_bombs", PREDICT, model, 0, *good)
        measure("predict_1_bomb", PREDICT, model, 1, *good, bomb)

    rss = {name: statistics.median(r["peak_rss_mb"] for r in results) for name, results in runs.items()}
    result = {
        "benchmark": "image_bombs",
        "good_images": args.images,
        "source_size": args.source_size,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "bomb": {
            "side": args.bomb_side,
            "bit_depth": 8,
            "file_bytes": bomb.stat().st_size,
            "decoded_mb": round(args.bomb_side**2 / 1e6, 1),
        },
        "machine": machine(),
        "peak_rss_mb": rss,
        "peak_rss_mb_each_round": {name: [r["peak_rss_mb"] for r in results] for name, results in runs.items()},
        "seconds": {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()},
        "sample_prepare_rss_ratio_10_bombs": round(rss["sample_prepare_10_bombs"] / rss["sample_prepare_0_bombs"], 3),
        "predict_rss_ratio_1_bomb": round(rss["predict_1_bomb"] / rss["predict_0_bombs"], 3),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
