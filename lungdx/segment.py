"""The `segment` stage: a lung mask for every sampled image, and the segmenter that draws them.

Under prepare.lung_mask crop or mask, a small U-Net (lungdx.models.build_unet) learns the lungs
from lung masks: the sampled images' own (the train split; val stops the training; test scores
it), or, with segment.train_source, another dataset's (split by the seed, as sample splits).
It then draws the lungs of every sampled image that has no mask of its own. With
segment.train_source set it does so under prepare.lung_mask none too: the classifier then gets
the whole X-rays, and the drawn lungs serve only to score where it looks (the Grad-CAM lung
energy share of the gradcam stage; prepare carries them in masks.npy). Writes:

    data/segmented/lung_masks.csv   path (as in the manifest), origin, mask: origin dataset (the
                                    mask is the source's, relative to data/raw), segmenter (drawn,
                                    relative to data/segmented) or whole (lungs implausible: see
                                    below; the drawing kept for the Grad-CAM scores)
    data/segmented/masks/<Class>/   the drawn masks, 0/255 PNGs at each image's own size
    data/segmented/implausible.csv  path, reason: drawn lungs that are empty, a sliver, one lung
                                    or most of the image; prepare uses those images whole
    data/segmented/segmenter.keras  the segmenter; the train stage puts it inside the classifier
    data/segmented/meta.json        settings, where it learned, counts of masks by origin
    metrics/segment.json            dice, iou (with 95% intervals) on the test images, n_test,
                                    and the masks by origin
    reports/segment.json            the same per image, training history, the implausible list
    reports/segment_images/         test images with the true (green) and drawn (red) lungs, and
                                    sampled images with the drawn lungs only (DVC image plots)

Under prepare.lung_mask none with segment.train_source empty nothing is learned or drawn (a
second's work, TensorFlow never starts): lung_masks.csv lists the source's own masks,
metrics/segment.json is {} and reports/segment_images/ is empty.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import readable
from .atomic import atomic_dir, write_json
from .errors import LungdxError
from .images import native_mask, read_gray, resize_square, write_png
from .lungs import draw_lungs, lung_problem, overlap
from .metrics import bounds, r6
from .opencv import cv2
from .raw import class_images, deduplicate, inspect_all
from .splits import LUNG_MASKS, SEGMENTER_FILE, load_manifest
from .stats import mean_interval

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    import keras
    import pandas as pd

    from .params import SegmentSettings
    from .workers import Progress

log = logging.getLogger(__name__)

# Fewer masks than this teach a U-Net little; 50 real ones (35 to train) already reached a test
# Dice of about 0.85 on cxr-covid-masked, 160 about 0.93 (docs/results.md).
MIN_MASKS = 50
MIN_VAL_DICE = 0.5  # a segmenter under this on its validation images learned nothing usable
# Augmentation of the training images (image and mask moved together; the image's contrast alone):
# real X-rays differ in framing and exposure far more than one dataset's do.
ROTATION, SHIFT, ZOOM, GAMMA = 10, 0.08, 0.1, 0.25
OVERLAYS = 6  # pictures of each kind in reports/segment_images
OUTLINE_TRUE, OUTLINE_DRAWN = (0, 200, 0), (0, 0, 255)  # BGR


# --- scoring ------------------------------------------------------------------------------


def score(segmenter: keras.Model, pairs: list[tuple[Path, Path]], seed: int) -> dict:
    """Dice and IoU of the segmenter on (image, true mask) files, each at the image's own size:
    means with percentile bootstrap intervals over the images, and per image."""
    images = [read_gray(image) for image, _ in pairs]
    drawn = draw_lungs(segmenter, images)
    per = [overlap(d, native_mask(mask, img.shape)) for d, img, (_, mask) in zip(drawn, images, pairs, strict=True)]
    dice, iou = np.array([p[0] for p in per]), np.array([p[1] for p in per])
    return {
        "dice": r6(dice.mean()),
        "dice_ci": bounds(*mean_interval(dice, seed=seed)),
        "iou": r6(iou.mean()),
        "iou_ci": bounds(*mean_interval(iou, seed=seed)),
        "n": len(pairs),
        "per_image": {str(image): r6(d) for (image, _), d in zip(pairs, dice, strict=True)},
    }


# --- learning the lungs -----------------------------------------------------------------------


def _arrays(pairs: list[tuple[Path, Path]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of (image, mask) files as the segmenter takes them: size x size uint8."""
    images, masks = [], []
    for image, mask in pairs:
        img = read_gray(image)
        images.append(resize_square(img, size))
        masks.append(resize_square(native_mask(mask, img.shape), size, is_mask=True))
    return np.stack(images), np.stack(masks)


def _augmented_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless seeded batches (float images 0..255, float masks 0/1), each image and its mask turned,
    shifted and zoomed together, and the image's contrast changed by a random gamma."""
    from .layers import RandomAffine

    move = RandomAffine(ROTATION, SHIFT, ZOOM, seed=seed + 1)
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = np.sort(order[start : start + batch_size])
            both = np.stack([x[idx], y[idx]], axis=-1).astype(np.float32)
            moved = np.asarray(move(both, training=True))
            gamma = np.exp(rng.uniform(-GAMMA, GAMMA, (len(idx), 1, 1, 1))).astype(np.float32)
            image = 255 * (np.clip(moved[..., :1], 0, 255) / 255) ** gamma
            yield image, (moved[..., 1:] > 127).astype(np.float32)


def dice_loss(y_true: Any, y_pred: Any) -> Any:
    """1 - the soft Dice of each image, averaged (Milletari et al. 2016): large lungs and small weigh alike."""
    import keras.ops as ops

    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    return 1 - ops.mean((2 * inter + 1) / (total + 1))


def segmentation_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy per pixel plus the Dice loss: the first for early gradients, the second
    for the overlap that is scored."""
    import keras

    return keras.ops.mean(keras.losses.binary_crossentropy(y_true, y_pred)) + dice_loss(y_true, y_pred)


def train_segmenter(
    settings: SegmentSettings, train: list[tuple[Path, Path]], val: list[tuple[Path, Path]]
) -> tuple[keras.Model, dict]:
    """A U-Net fitted on `train` (image, mask) files with early stopping on `val`'s loss; returns it
    and its history. Refuses, writing nothing, one whose validation Dice is under MIN_VAL_DICE."""
    from .models import build_unet, make_deterministic, stop_on_nonfinite_loss

    make_deterministic(settings.seed)
    import keras

    x, y = _arrays(train, settings.image_size)
    vx, vy = _arrays(val, settings.image_size)
    batch_size = min(settings.batch_size, len(x))
    model = build_unet(settings.image_size, settings.filters)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=segmentation_loss)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
    history = model.fit(
        _augmented_batches(x, y, batch_size, settings.seed),
        steps_per_epoch=len(x) // batch_size,
        validation_data=(vx.astype(np.float32)[..., None], (vy > 0).astype(np.float32)[..., None]),
        epochs=settings.epochs,
        verbose=2,
        shuffle=False,  # the batches are shuffled
        callbacks=[stop_on_nonfinite_loss(settings.key("learning_rate"), settings.learning_rate), stop],
    )
    val_dice = float(np.mean([overlap(d, m)[0] for d, m in zip(draw_lungs(model, list(vx)), vy, strict=True)]))
    if not val_dice >= MIN_VAL_DICE:
        raise LungdxError(
            f"the lung segmenter learned nothing usable: Dice {readable.score(val_dice)} on its {len(val)} "
            f"validation images, under {MIN_VAL_DICE}; check that the masks are the images' lungs "
            f"(white on black), or change {settings.key('learning_rate')} or {settings.key('epochs')}; "
            "no segmenter was saved"
        )
    return model, {
        "epochs_run": len(history.history["loss"]),
        "val_dice": r6(val_dice),
        "loss": [r6(v) for v in history.history["loss"]],
        "val_loss": [r6(v) for v in history.history["val_loss"]],
    }


# --- where the masks come from ----------------------------------------------------------------


def _split_pairs(pairs: list, settings: SegmentSettings) -> dict[str, list]:
    """train, val and test parts of another dataset's (image, mask) pairs, drawn from the seed."""
    order = np.random.default_rng(settings.seed).permutation(len(pairs))
    n_test, n_val = round(len(pairs) * settings.test_size), max(1, round(len(pairs) * settings.val_size))
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {name: [pairs[i] for i in sorted(idx)] for name, idx in parts.items()}


def masked_pairs(
    raw_dir: Path, progress: Progress | None = None
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(image, lung mask) files of a raw layout, each image with a usable mask, duplicates once; and
    (path, reason) of the masks that could not be used."""
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir())
    kept, skipped = deduplicate(inspect_all(raw_dir, [r for c in classes for r in class_images(raw_dir, c)], progress))
    pairs = [(raw_dir / item.path, raw_dir / item.masks["masks"]) for item in kept if "masks" in item.masks]
    return pairs, [s for s in skipped if "mask" in s[1]]


def learns(settings: SegmentSettings) -> bool:
    """Whether the stage learns and draws the lungs: for a lung focus (crop, mask), or, under none,
    for the Grad-CAM lung share when a train_source is given."""
    return settings.lung_mask != "none" or bool(settings.train_source)


def _too_few(n: int, where: str, problems: list[tuple[str, str]], settings: SegmentSettings) -> LungdxError:
    shown = f"; {len(problems)} mask(s) unusable, e.g. {problems[0][0]}: {problems[0][1]}" if problems else ""
    lung_mask, train_source = settings.key("lung_mask"), settings.key("train_source")
    if settings.lung_mask == "none":  # learning only for the Grad-CAM lung share
        why, way_out = "for the Grad-CAM lung share", f"add masks, or empty {train_source}"
    else:
        why = f"for {lung_mask}={settings.lung_mask}"
        way_out = f"add masks, set {train_source} to a dataset with lung masks (the Kaggle layout's <Class>/masks), "
        way_out += f"or set {lung_mask}: none"
    return LungdxError(
        f"{where} has {n} image(s) with a usable lung mask{shown}; the segmenter needs at least "
        f"{MIN_MASKS} to learn the lungs {why}: {way_out}"
    )


def learning_pairs(
    settings: SegmentSettings,
    manifest: pd.DataFrame,
    raw_dir: Path,
    work_dir: Path,
    project_root: str | Path | None,
    progress: Progress | None = None,
) -> tuple[dict[str, list[tuple[Path, Path]]], str]:
    """The (image, mask) files the segmenter learns from, as {train, val, test}, and where from."""
    if settings.train_source:
        from .sources import bring_in_dataset

        other = work_dir / "train_source"
        bring_in_dataset(
            settings.train_source, other, settings.key("train_source"), project_root, reader="the segment stage"
        )
        pairs, problems = masked_pairs(other, progress)
        if len(pairs) < MIN_MASKS:
            raise _too_few(len(pairs), f"{settings.key('train_source')} = {settings.train_source}", problems, settings)
        return _split_pairs(pairs, settings), settings.train_source
    return _own_pairs(settings, manifest, raw_dir), "dataset.source"


def _own_pairs(settings: SegmentSettings, manifest: pd.DataFrame, raw_dir: Path) -> dict[str, list[tuple[Path, Path]]]:
    """The sampled images' own (image, mask) files, by split: at least MIN_MASKS, some in each."""
    with_mask = manifest[manifest["mask"] != ""]
    if len(with_mask) < MIN_MASKS:
        if with_mask.empty:
            raise LungdxError(
                f"{settings.key('lung_mask')} is {settings.lung_mask}, but dataset.source has no lung "
                f"masks and {settings.key('train_source')} is empty: set {settings.key('train_source')} "
                "to a dataset with lung masks (the Kaggle layout's <Class>/masks) for the segmenter "
                f"to learn from, or set {settings.key('lung_mask')}: none"
            )
        raise _too_few(len(with_mask), "dataset.source", [], settings)
    parts = {
        split: [(raw_dir / r.path, raw_dir / r.mask) for r in with_mask[with_mask["split"] == split].itertuples()]
        for split in ("train", "val", "test")
    }
    for split, rows in parts.items():
        if not rows:
            raise LungdxError(
                f"dataset.source: no {split} image has a lung mask (of {len(with_mask)} masked images); "
                f"the segmenter learns on train, stops on val and is scored on test: add masks, or set "
                f"{settings.key('train_source')}"
            )
    return parts


def _capped(pairs: list, cap: int, seed: int) -> list:
    """At most `cap` of `pairs`, a seeded choice in their order."""
    if len(pairs) <= cap:
        return pairs
    return [pairs[i] for i in sorted(np.random.default_rng(seed).permutation(len(pairs))[:cap])]


# --- the stage --------------------------------------------------------------------------------


def drawn_mask_name(path: str) -> str:
    """data/segmented's file of an image's drawn mask: masks/<Class>/<file name>, as a PNG."""
    parts = Path(path).parts
    name = Path(parts[-1])
    return (Path("masks") / parts[0] / (name.name if name.suffix.lower() == ".png" else name.name + ".png")).as_posix()


def _picture(image: np.ndarray, masks_and_colours: Iterable[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """An X-ray (BGR) with the outline of each mask in its colour, at most 512 px on its longer side."""
    from .heatmaps import mask_boundary

    scale = min(1.0, 512 / max(image.shape))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    picture = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    for mask, colour in masks_and_colours:
        edge = mask_boundary(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))
        picture[cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = colour
    return picture


def segment(
    settings: SegmentSettings,
    manifest_path: str | Path,
    raw_dir: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    details_path: str | Path,
    images_dir: str | Path,
    project_root: str | Path = ".",
    progress: Progress | None = None,
) -> dict:
    """The segment stage; returns meta.json's content."""
    manifest, raw_dir = load_manifest(manifest_path), Path(raw_dir)
    own = manifest[manifest["mask"] != ""]
    rows = [{"path": r.path, "origin": "dataset", "mask": r.mask} for r in own.itertuples()]
    meta: dict[str, Any] = {
        "lung_mask": settings.lung_mask,
        "segmenter": None,
        "counts": {"dataset": len(own), "segmenter": 0, "whole": 0, "none": len(manifest) - len(own)},
    }
    found = None
    if settings.lung_mask == "none" and settings.train_source:
        log.info(
            f"segment: {settings.key('lung_mask')} is none: the classifier gets the whole X-rays; the lungs "
            f"learned from {settings.key('train_source')} are drawn only to score where it looks"
        )
    with tempfile.TemporaryDirectory(prefix="lungdx-segment-") as work, atomic_dir(out_dir) as tmp:
        if learns(settings):
            found = _learn_and_draw(settings, manifest, raw_dir, Path(work), tmp, project_root, progress)
            rows += found.rows
            meta["segmenter"] = found.learned
            n_whole = len(found.implausible)
            meta["counts"].update(segmenter=len(found.rows) - n_whole, whole=n_whole, none=0)
        _write_lists(tmp, rows, found.implausible if found else [], meta)
        _write_reports(settings, found, meta["counts"], images_dir, metrics_path, details_path)
    return meta


@dataclass(frozen=True)
class _Segmented:
    """What a learned segmenter gives the stage's outputs."""

    rows: list[dict[str, str]]  # lung_masks.csv's, of the images it drew
    implausible: list[tuple[str, str]]  # (path, reason)
    pictures: dict[str, np.ndarray]  # reports/segment_images/
    learned: dict  # meta.json's segmenter
    tested: dict  # score() on the test images
    history: dict  # train_segmenter's


def _learn_and_draw(
    settings: SegmentSettings,
    manifest: pd.DataFrame,
    raw_dir: Path,
    work: Path,
    tmp: Path,
    project_root: str | Path,
    progress: Progress | None,
) -> _Segmented:
    """Learn the lungs, score the segmenter on the test images, draw the lungs of every sampled
    image without a mask into tmp, and save the segmenter there, unless it drew too many implausible lungs."""
    parts, learned_from = learning_pairs(settings, manifest, raw_dir, work, project_root, progress)
    train = _capped(parts["train"], settings.max_train_images, settings.seed)
    log.info(
        f"segment: learning the lungs from {len(train)} images of {learned_from} "
        f"({len(parts['val'])} to validate, {len(parts['test'])} to score)"
    )
    segmenter, history = train_segmenter(settings, train, parts["val"])
    tested = score(segmenter, parts["test"], settings.seed)
    lacking = manifest[manifest["mask"] == ""]
    rows, implausible, pictures = _draw_missing(segmenter, lacking, raw_dir, tmp)
    pictures.update(_test_pictures(segmenter, parts["test"]))
    _refuse_implausible(implausible, len(lacking), learned_from)
    from .model_file import save_reproducibly

    save_reproducibly(segmenter, tmp / SEGMENTER_FILE)
    learned = {
        "image_size": settings.image_size,
        "filters": list(settings.filters),
        "learned_from": learned_from,
        "n_train": len(train),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "test_dice": tested["dice"],
        "val_dice": history["val_dice"],
    }
    return _Segmented(rows, implausible, pictures, learned, tested, history)


def _draw_missing(
    segmenter: keras.Model, lacking: pd.DataFrame, raw_dir: Path, tmp: Path
) -> tuple[list[dict[str, str]], list[tuple[str, str]], dict[str, np.ndarray]]:
    """The lungs of every image of `lacking` (manifest rows without a mask) drawn into tmp's masks/,
    64 images in memory at a time; returns their lung_masks.csv rows, the implausible ones (path,
    reason) and OVERLAYS pictures of drawn lungs, spread over the manifest: every class and split."""
    rows: list[dict[str, str]] = []
    implausible: list[tuple[str, str]] = []
    pictures: dict[str, np.ndarray] = {}
    shown = set(np.linspace(0, len(lacking) - 1, OVERLAYS).round().astype(int)) if len(lacking) else set()
    for start in range(0, len(lacking), 64):
        chunk = lacking.iloc[start : start + 64]
        images = [read_gray(raw_dir / p) for p in chunk["path"]]
        for k, (path, image, mask) in enumerate(
            zip(chunk["path"], images, draw_lungs(segmenter, images), strict=True), start=start
        ):
            name, problem = drawn_mask_name(path), lung_problem(mask)
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            write_png(tmp / name, mask)
            rows.append({"path": path, "origin": "whole" if problem else "segmenter", "mask": name})
            if problem:
                implausible.append((path, problem))
                log.warning(f"segment: implausible lungs drawn for {raw_dir / path}: {problem}; prepare uses it whole")
            if k in shown:
                pictures[f"drawn_{len(pictures) + 1}.png"] = _picture(image, [(mask, OUTLINE_DRAWN)])
    return rows, implausible, pictures


def _refuse_implausible(implausible: list[tuple[str, str]], n_drawn: int, learned_from: str) -> None:
    """A segmenter that drew implausible lungs on most of the `n_drawn` images has not learned them."""
    if len(implausible) > max(5, n_drawn // 2):
        raise LungdxError(
            f"the lung segmenter drew implausible lungs on {len(implausible)} of the {n_drawn} "
            f"images without a mask (e.g. {implausible[0][0]}: {implausible[0][1]}): it has not "
            f"learned these X-rays' lungs; check the masks it learned from "
            f"({learned_from}) and that they are of X-rays like these; no segmenter was saved"
        )


def _test_pictures(segmenter: keras.Model, test: list[tuple[Path, Path]]) -> dict[str, np.ndarray]:
    """The first OVERLAYS test images with their true lungs (green) and the drawn ones (red)."""
    pictures = {}
    for k, (image, mask) in enumerate(test[:OVERLAYS], start=1):
        img = read_gray(image)
        pictures[f"test_{k}.png"] = _picture(
            img,
            [(native_mask(mask, img.shape), OUTLINE_TRUE), (draw_lungs(segmenter, [img])[0], OUTLINE_DRAWN)],
        )
    return pictures


def _write_reports(
    settings: SegmentSettings,
    found: _Segmented | None,
    counts: dict[str, int],
    images_dir: str | Path,
    metrics_path: str | Path,
    details_path: str | Path,
) -> None:
    """reports/segment_images/, metrics/segment.json and reports/segment.json: no pictures, no
    metrics and why, where no segmenter was learned (`found` None: lung_mask none, no train_source)."""
    if found is None:
        why = f"{settings.key('lung_mask')} is none and {settings.key('train_source')} is empty"
        pictures, metrics, details = {}, {}, {"trained": False, "why": why}
    else:
        pictures, metrics, details = found.pictures, _metrics(found, counts), _details(found)
    with atomic_dir(images_dir) as pics:
        for name, picture in pictures.items():
            write_png(pics / name, picture)
        write_json(metrics_path, metrics)
        write_json(details_path, details)


def _metrics(found: _Segmented, counts: dict[str, int]) -> dict:
    """metrics/segment.json: the test scores, and how many masks of each origin (dataset, segmenter, whole)."""
    tested = found.tested
    masks = {origin: n for origin, n in counts.items() if origin != "none"}
    return {
        "dice": tested["dice"],
        "dice_ci": tested["dice_ci"],
        "iou": tested["iou"],
        "iou_ci": tested["iou_ci"],
        "n_test": tested["n"],
        "masks": masks,
    }


def _details(found: _Segmented) -> dict:
    """reports/segment.json: what was learned, the scores per image, the history, the implausible list."""
    return {
        "trained": True,
        **found.learned,
        "test": found.tested,
        "history": found.history,
        "implausible": [{"path": p, "reason": r} for p, r in found.implausible],
        "overlays": {
            "test_<k>.png": "a test image: true lungs green, drawn lungs red",
            "drawn_<k>.png": "a sampled image without a mask: the lungs drawn, red",
        },
    }


def _write_lists(tmp: Path, rows: list[dict[str, str]], implausible: list[tuple[str, str]], meta: dict) -> None:
    """data/segmented's lung_masks.csv (sorted by path), implausible.csv and meta.json."""
    rows = sorted(rows, key=lambda r: r["path"])
    _write_csv(tmp / LUNG_MASKS, ["path", "origin", "mask"], [[r[k] for k in ("path", "origin", "mask")] for r in rows])
    _write_csv(tmp / "implausible.csv", ["path", "reason"], implausible)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence]) -> None:
    import pandas as pd

    pd.DataFrame(list(rows), columns=header).to_csv(path, index=False, lineterminator="\n")
