"""The `prepare` stage: every sampled image as a fixed-size 8-bit grayscale array.

    data/prepared/<split>/images.npy    uint8 (N, S, S), in manifest order
    data/prepared/<split>/labels.npy    int64 (N,)
    data/prepared/<split>/masks.npy     uint8 (N, S, S) 0/255 lung masks    } only when the
    data/prepared/<split>/lesions.npy   uint8 (N, S, S) 0/255 lesion masks  } source has them
    data/prepared/meta.json             classes, image_size, lung_mask, counts, which masks exist,
                                        lung_masks: how many lung masks are the dataset's, drawn, whole

Plain .npy files load with one read, or memory-mapped, so training streams
uint8 batches without ever holding the set as float32. Resize policy: see
lungdx.images (pad to square, INTER_AREA down, INTER_LINEAR up, masks nearest).

Lung masks come from the segment stage (data/segmented/lung_masks.csv): the dataset's own, or
the segmenter's where the dataset has none. With prepare.lung_mask crop or mask, each image is
first cut to its lungs (lungdx.images.focus_on_lungs) and its masks are cut the same way, so
masks.npy and lesions.npy still lie exactly on images.npy; an image whose drawn lungs are
implausible (data/segmented/implausible.csv) is used whole, its drawing kept in masks.npy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_dir, check_free_space
from .errors import LungdxError
from .images import WHOLE, UnreadableImage, check_lung_masks, prepare_image
from .splits import SPLITS, load_lung_masks, load_manifest
from .workers import cpu_count, map_in_workers

if TYPE_CHECKING:
    import pandas as pd

    from .params import PrepareSettings
    from .workers import Progress

ARRAYS = ("images", "masks", "lesions")
CHUNK = 32  # images per task: large enough to amortise a task, small enough to balance two cores


def _fill_chunk(args) -> int:
    """Decode and resize one chunk of rows straight into the split's memory-mapped .npy files.

    Workers write their own rows in place, so no image crosses a process boundary: sending
    three arrays per image back through a pipe cost the parent most of a core.
    """
    raw_dir, size, lung_mask, files, start, rows = args
    outs = {name: np.load(path, mmap_mode="r+") for name, path in files.items()}
    for i, (path, mask, whole, lesion) in enumerate(rows, start):
        try:
            arrays = prepare_image(
                Path(raw_dir) / path,
                size,
                lung_mask,
                Path(mask) if mask else None,
                Path(raw_dir) / lesion if lesion else None,
                lungs=WHOLE if whole else None,
            )
        except UnreadableImage as exc:
            raise LungdxError(
                f"{Path(raw_dir) / path}: {exc}; it was readable when sampled: check the file, then rerun dvc repro"
            ) from exc
        for name, array in zip(ARRAYS, arrays, strict=True):
            if array is not None:
                outs[name][i] = array
    for out in outs.values():
        out.flush()
    return len(rows)


def _allocate(path: Path, n: int, size: int) -> None:
    """A zero-filled .npy of n images with the header np.save would write, its blocks reserved.

    Reserving matters: writing into a sparse memory-mapped file on a full disk kills the
    process with SIGBUS (no message, no cleanup); posix_fallocate fails with ENOSPC instead,
    before any image is decoded.
    """
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
    if not hasattr(os, "posix_fallocate"):  # macOS: the free-space check in prepare() must do
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)


def _fill_split(folder: Path, rows, raw_dir, size, lung_mask, has, workers, progress, desc) -> None:
    folder.mkdir()
    n = len(rows)
    files = {name: folder / f"{name}.npy" for name in ARRAYS if name == "images" or has[name]}
    for path in files.values():
        _allocate(path, n, size)
    items = list(zip(rows["path"], rows["mask"], rows["whole"], rows["lesion"], strict=True))
    tasks = [
        (str(raw_dir), size, lung_mask, {k: str(v) for k, v in files.items()}, i, items[i : i + CHUNK])
        for i in range(0, n, CHUNK)
    ]
    done = map_in_workers(_fill_chunk, tasks, workers)
    for _ in progress(done, total=len(tasks), desc=f"{desc} (chunks of {CHUNK})") if progress else done:
        pass
    np.save(folder / "labels.npy", rows["label"].to_numpy(np.int64))


def prepare(
    settings: PrepareSettings,
    manifest_path: str | Path,
    raw_dir: str | Path,
    segmented_dir: str | Path,
    out_dir: str | Path,
    progress: Progress | None = None,
) -> dict:
    """The prepare stage: every image of the manifest at the
    settings' image size, lung-focused as their lung_mask says, with the lung masks of the segment
    stage (the dataset's own or drawn); returns meta.json's content."""
    image_size, lung_mask = settings.image_size, settings.lung_mask
    manifest = load_manifest(manifest_path)
    raw_dir = Path(raw_dir)
    found = load_lung_masks(segmented_dir, raw_dir)
    _add_lung_masks(manifest, found)
    _check_lung_masks(manifest, settings)
    classes = [c for _, c in sorted(set(zip(manifest["label"], manifest["class"], strict=True)))]
    has = {"masks": bool((manifest["mask"] != "").any()), "lesions": bool((manifest["lesion"] != "").any())}
    _check_room(out_dir, manifest, has, image_size)
    workers = min(cpu_count(), max(1, len(manifest) // (2 * CHUNK)))
    meta: dict[str, Any] = {
        "classes": classes,
        "image_size": image_size,
        "lung_mask": lung_mask,
        "counts": {},
        "has": has,
        "lung_masks": _lung_mask_origins(manifest, found),
    }
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            _fill_split(tmp / split, rows, raw_dir, image_size, lung_mask, has, workers, progress, split)
            meta["counts"][split] = {c: int((rows["class"] == c).sum()) for c in classes}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _add_lung_masks(manifest: pd.DataFrame, found: dict[str, tuple[str, Path]]) -> None:
    """Each image's lung mask from the segment stage's `found`, into the manifest's columns mask
    (its file, "" for none) and whole (its lungs were implausible: the image is used whole)."""
    manifest["mask"] = [str(found[p][1]) if p in found else "" for p in manifest["path"]]
    manifest["whole"] = [p in found and found[p][0] == "whole" for p in manifest["path"]]


def _check_lung_masks(manifest: pd.DataFrame, settings: PrepareSettings) -> None:
    """Under lung_mask crop or mask, refuse images without a lung mask (check_lung_masks)."""
    check_lung_masks(
        manifest.loc[manifest["mask"] == "", "path"].tolist(),
        len(manifest),
        settings.lung_mask,
        settings.key("lung_mask"),
        f"run dvc repro (the segment stage draws the missing ones), or set {settings.key('lung_mask')}: none",
    )


def _check_room(out_dir: str | Path, manifest: pd.DataFrame, has: dict[str, bool], image_size: int) -> None:
    """Refuse before any work when the arrays would not fit in the free space at out_dir."""
    arrays = 1 + has["masks"] + has["lesions"]
    # Each image: one uint8 square per array, and an int64 label; then .npy headers and meta.json.
    needed = len(manifest) * (arrays * image_size**2 + 8) + 64 * 1024
    check_free_space(out_dir, needed, f"{len(manifest):,} prepared images at {image_size}x{image_size}")


def _lung_mask_origins(manifest: pd.DataFrame, found: dict[str, tuple[str, Path]]) -> dict[str, int]:
    """How many of the manifest's lung masks are the dataset's, drawn (segmenter) and whole."""
    return {
        o: sum(1 for p in manifest["path"] if p in found and found[p][0] == o)
        for o in ("dataset", "segmenter", "whole")
    }
