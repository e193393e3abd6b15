"""The `sample` stage: a seeded, stratified, duplicate-free choice of images.

Reads data/raw (never writes there) and writes:

    data/sampled/manifest.csv   path, class, label, split, sha256, mask, lesion, width, height
    data/sampled/skipped.csv    path, reason: unreadable files and exact duplicates (paths
                                relative to data/raw), and first the files the download stage
                                did not take from dataset.source (symbolic links, pipes, unsafe
                                zip entries, ...), as "source:<path relative to dataset.source>"
                                (read from data/raw/source.json)

Every file is hashed and decoded once, so unreadable files are reported by
name instead of crashing training, and exact duplicates (same bytes; the real
database has some) are kept once, which is what stops one image from landing
in both train and test.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_dir
from .errors import LungdxError
from .images import UnreadableImage, check_lung_mask, decode_gray, native_mask, read_bytes
from .workers import cpu_count, map_in_workers

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
COLUMNS = ["path", "class", "label", "split", "sha256", "mask", "lesion", "width", "height"]


def find_classes(raw_dir: Path, wanted: list[str]) -> list[str]:
    found = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if wanted:
        missing = [c for c in wanted if c not in found]
        if missing:
            raise LungdxError(f"params.yaml: dataset.classes names {missing} which the dataset does not have; "
                              f"classes found in {raw_dir}: {found}")
        found = list(wanted)
    unprintable = [c for c in found if not c.isprintable()]
    if unprintable:  # a newline or an escape sequence in a class name would forge lines wherever it is shown
        raise LungdxError(f"{raw_dir}: class folder names with control characters: {unprintable}; rename them "
                          "(the model file refuses such class names)")
    if len(found) < 2:
        raise LungdxError(f"{raw_dir}: found {len(found)} class ({found}); a classifier needs at least 2 class "
                          "folders (check dataset.source and dataset.classes)")
    return found


def _inspect(args):
    """Hash and decode one image (and check its masks); runs in a worker process."""
    raw_dir, rel = args
    path = Path(raw_dir) / rel
    try:
        data = read_bytes(path)  # a file over images.MAX_FILE_BYTES is refused from its size, unread
        img = decode_gray(data)  # an image over images.MAX_PIXELS is refused from its header, undecoded
    except UnreadableImage as exc:
        return rel, None, str(exc), None, {}
    masks, problems = {}, []
    for sub in ("masks", "lesions"):
        candidate = Path(rel).parent.parent / sub / Path(rel).name
        if (Path(raw_dir) / candidate).is_file():
            try:
                mask = native_mask(Path(raw_dir) / candidate, img.shape)  # readable, and of this image's shape
                if sub == "masks":
                    check_lung_mask(mask)  # an empty or tiny lung mask would crop to nothing under lung_mask
                masks[sub] = candidate.as_posix()
            except UnreadableImage as exc:
                problems.append(f"{candidate.as_posix()}: {exc}")
    return rel, hashlib.sha256(data).hexdigest(), problems, img.shape, masks


def inspect_all(raw_dir: Path, rels: list[str], progress=None) -> list[tuple]:
    jobs = [(str(raw_dir), rel) for rel in rels]
    workers = min(cpu_count(), max(1, len(jobs) // 64))
    results = map_in_workers(_inspect, jobs, workers, chunksize=32)
    return list(progress(results, total=len(jobs), desc="inspect") if progress else results)


def split_counts(n: int, val_size: float, test_size: float) -> tuple[int, int, int]:
    n_test = int(round(n * test_size))
    n_val = int(round(n * val_size))
    return n - n_val - n_test, n_val, n_test


def skipped_by_download(raw_dir: Path) -> list[tuple[str, str]]:
    """The files the download stage did not take from dataset.source (links, pipes, ...; see
    lungdx.source_checks), as (path, reason) rows for skipped.csv: "source:<path relative to
    dataset.source>". The download already warned about each."""
    record = raw_dir / "source.json"
    if not record.is_file():
        return []
    try:
        listed = json.loads(record.read_text(encoding="utf-8")).get("skipped", [])
        return [(f"source:{item['path']}", str(item["reason"])) for item in listed]
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise LungdxError(f"{record}: not the record the download stage writes ({type(exc).__name__}: "
                          f"{exc}); run it again: dvc repro -f download") from None


def sample(raw_dir: str | Path, out_dir: str | Path, settings: dict, progress=None) -> pd.DataFrame:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise LungdxError(f"{raw_dir}: not found; run the download stage first (dvc repro download)")
    from_source = skipped_by_download(raw_dir)
    classes = find_classes(raw_dir, settings["classes"])
    rels = []
    for cls in classes:
        folder = raw_dir / cls / "images"
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        rels += [p.relative_to(raw_dir).as_posix() for p in files]

    skipped, seen, usable = [], {}, {c: [] for c in classes}
    for rel, digest, problem, shape, masks in inspect_all(raw_dir, rels, progress):
        if digest is None:
            skipped.append((rel, problem))
            continue
        for p in problem:  # an unreadable or unusable mask: keep the image, drop the mask
            skipped.append((p.split(": ", 1)[0], "unusable mask: " + p.split(": ", 1)[1]))
        if digest in seen:
            skipped.append((rel, f"exact duplicate of {seen[digest]}"))
            continue
        seen[digest] = rel
        cls = rel.split("/", 1)[0]
        usable[cls].append({"path": rel, "class": cls, "label": classes.index(cls), "sha256": digest,
                            "mask": masks.get("masks", ""), "lesion": masks.get("lesions", ""),
                            "width": shape[1], "height": shape[0]})
    for rel, reason in skipped:
        log.warning(f"skipped {raw_dir / rel}: {reason}")
    if from_source:
        log.info(f"the download stage skipped {len(from_source)} file(s) of dataset.source (links, pipes, "
                 f"...); they are listed in {out_dir / 'skipped.csv'} as source:<path>")

    rng = np.random.default_rng(settings["seed"])
    rows = []
    for cls in classes:
        items = usable[cls]
        if not items:
            raise LungdxError(f"class '{cls}' has no usable image in {raw_dir / cls / 'images'}; add images "
                              "or leave it out with dataset.classes")
        n = min(settings["per_class"], len(items))
        if n < settings["per_class"]:
            log.info(f"class '{cls}' has {len(items)} usable images, fewer than sample.per_class="
                     f"{settings['per_class']}; using all of them")
        n_train, n_val, n_test = split_counts(n, settings["val_size"], settings["test_size"])
        if min(n_train, n_val, n_test) < 1:
            raise LungdxError(f"class '{cls}': {n} images give train/val/test = {n_train}/{n_val}/{n_test} with "
                              f"sample.val_size={settings['val_size']} and sample.test_size="
                              f"{settings['test_size']}; every split needs at least one image: add images "
                              "or change the split sizes")
        chosen = rng.permutation(len(items))[:n]
        splits = ["test"] * n_test + ["val"] * n_val + ["train"] * n_train
        for idx, split in zip(chosen, splits):
            rows.append({**items[idx], "split": split})

    manifest = pd.DataFrame(rows, columns=COLUMNS)
    manifest["_split"] = manifest["split"].map(SPLITS.index)
    manifest = manifest.sort_values(["_split", "label", "path"]).drop(columns="_split").reset_index(drop=True)
    with atomic_dir(out_dir) as tmp:
        manifest.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        pd.DataFrame(from_source + skipped, columns=["path", "reason"]).to_csv(tmp / "skipped.csv", index=False,
                                                                 lineterminator="\n")
    return manifest


def load_manifest(path: str | Path = "data/sampled/manifest.csv") -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise LungdxError(f"{path}: not found; run the sample stage first (dvc repro sample)")
    return pd.read_csv(path, keep_default_na=False, dtype={"path": str, "class": str, "mask": str, "lesion": str})
