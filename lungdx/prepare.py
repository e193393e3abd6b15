"""The `prepare` stage: every sampled image as a fixed-size 8-bit grayscale array.

    data/prepared/<split>/images.npy    uint8 (N, S, S), in manifest order
    data/prepared/<split>/labels.npy    int64 (N,)
    data/prepared/<split>/masks.npy     uint8 (N, S, S) 0/255 lung masks    } only when the
    data/prepared/<split>/lesions.npy   uint8 (N, S, S) 0/255 lesion masks  } source has them
    data/prepared/meta.json             classes, image_size, counts, which masks exist

Plain .npy files load with one read, or memory-mapped, so training streams
uint8 batches without ever holding the set as float32. Resize policy: see
lungdx.images (pad to square, INTER_AREA down, INTER_LINEAR up, masks nearest).
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .atomic import atomic_dir
from .errors import LungdxError
from .images import UnreadableImage, load_for_model, load_mask
from .sample import SPLITS, cpu_count, load_manifest


def _load_row(args):
    raw_dir, size, path, mask, lesion = args
    try:
        img = load_for_model(Path(raw_dir) / path, size)
        masks = [load_mask(Path(raw_dir) / m, size) if m else None for m in (mask, lesion)]
    except UnreadableImage as exc:
        raise LungdxError(f"{Path(raw_dir) / path}: {exc}; it was readable when sampled: "
                          "rerun dvc repro so sample sees the current files") from None
    return img, masks[0], masks[1]


def _load_split(rows, raw_dir, size, pool, progress, desc):
    n = len(rows)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    lesions = np.zeros((n, size, size), np.uint8)
    jobs = [(str(raw_dir), size, r.path, r.mask, r.lesion) for r in rows.itertuples()]
    results = pool.map(_load_row, jobs, chunksize=16) if pool else map(_load_row, jobs)
    for i, (img, mask, lesion) in enumerate(progress(results, total=n, desc=desc) if progress else results):
        images[i] = img
        if mask is not None:
            masks[i] = mask
        if lesion is not None:
            lesions[i] = lesion
    return images, masks, lesions


def prepare(manifest_path: str | Path, raw_dir: str | Path, out_dir: str | Path, image_size: int,
            progress=None) -> dict:
    manifest = load_manifest(manifest_path)
    raw_dir = Path(raw_dir)
    classes = [c for _, c in sorted(set(zip(manifest["label"], manifest["class"])))]
    has = {"masks": bool((manifest["mask"] != "").any()), "lesions": bool((manifest["lesion"] != "").any())}
    workers = min(cpu_count(), max(1, len(manifest) // 64))
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    meta = {"classes": classes, "image_size": image_size, "counts": {}, "has": has}
    try:
        with atomic_dir(out_dir) as tmp:
            for split in SPLITS:
                rows = manifest[manifest["split"] == split]
                images, masks, lesions = _load_split(rows, raw_dir, image_size, pool, progress, split)
                (tmp / split).mkdir()
                np.save(tmp / split / "images.npy", images)
                np.save(tmp / split / "labels.npy", rows["label"].to_numpy(np.int64))
                if has["masks"]:
                    np.save(tmp / split / "masks.npy", masks)
                if has["lesions"]:
                    np.save(tmp / split / "lesions.npy", lesions)
                meta["counts"][split] = {c: int((rows["class"] == c).sum()) for c in classes}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        if pool:
            pool.shutdown()
    return meta
