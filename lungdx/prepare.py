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


ARRAYS = ("images", "masks", "lesions")
CHUNK = 32  # images per task: large enough to amortise a task, small enough to balance two cores


def _fill_chunk(args) -> int:
    """Decode and resize one chunk of rows straight into the split's memory-mapped .npy files.

    Workers write their own rows in place, so no image crosses a process boundary: sending
    three arrays per image back through a pipe cost the parent most of a core.
    """
    raw_dir, size, files, start, rows = args
    outs = {name: np.load(path, mmap_mode="r+") for name, path in files.items()}
    for i, (path, mask, lesion) in enumerate(rows, start):
        try:
            outs["images"][i] = load_for_model(Path(raw_dir) / path, size)
            for name, rel in (("masks", mask), ("lesions", lesion)):
                if rel:
                    outs[name][i] = load_mask(Path(raw_dir) / rel, size)
        except UnreadableImage as exc:
            raise LungdxError(f"{Path(raw_dir) / path}: {exc}; it was readable when sampled: "
                              "rerun dvc repro so sample sees the current files") from None
    for out in outs.values():
        out.flush()
    return len(rows)


def _fill_split(folder: Path, rows, raw_dir, size, has, pool, progress, desc) -> None:
    folder.mkdir()
    n = len(rows)
    files = {name: folder / f"{name}.npy" for name in ARRAYS if name == "images" or has[name]}
    for path in files.values():  # zero-filled, with the header np.save would write
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
    items = list(zip(rows["path"], rows["mask"], rows["lesion"]))
    tasks = [(str(raw_dir), size, {k: str(v) for k, v in files.items()}, i, items[i:i + CHUNK])
             for i in range(0, n, CHUNK)]
    done = pool.map(_fill_chunk, tasks) if pool else map(_fill_chunk, tasks)
    for _ in progress(done, total=len(tasks), desc=f"{desc} (chunks of {CHUNK})") if progress else done:
        pass
    np.save(folder / "labels.npy", rows["label"].to_numpy(np.int64))


def prepare(manifest_path: str | Path, raw_dir: str | Path, out_dir: str | Path, image_size: int,
            progress=None) -> dict:
    manifest = load_manifest(manifest_path)
    raw_dir = Path(raw_dir)
    classes = [c for _, c in sorted(set(zip(manifest["label"], manifest["class"])))]
    has = {"masks": bool((manifest["mask"] != "").any()), "lesions": bool((manifest["lesion"] != "").any())}
    workers = min(cpu_count(), max(1, len(manifest) // (2 * CHUNK)))
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    meta = {"classes": classes, "image_size": image_size, "counts": {}, "has": has}
    try:
        with atomic_dir(out_dir) as tmp:
            for split in SPLITS:
                rows = manifest[manifest["split"] == split]
                _fill_split(tmp / split, rows, raw_dir, image_size, has, pool, progress, split)
                meta["counts"][split] = {c: int((rows["class"] == c).sum()) for c in classes}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        if pool:
            pool.shutdown()
    return meta
