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

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .atomic import atomic_dir
from .errors import LungdxError
from .raw import class_images, deduplicate, inspect_all
from .splits import COLUMNS, SPLITS

if TYPE_CHECKING:
    from .params import SampleSettings
    from .workers import Progress

log = logging.getLogger(__name__)


def find_classes(raw_dir: Path, wanted: tuple[str, ...], wanted_key: str) -> list[str]:
    """The class folders of raw_dir, or `wanted` (the setting `wanted_key`) in its order."""
    found = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if wanted:
        missing = [c for c in wanted if c not in found]
        if missing:
            raise LungdxError(
                f"params.yaml: {wanted_key} names {missing} which the dataset does not have; "
                f"classes found in {raw_dir}: {found}"
            )
        found = list(wanted)
    unprintable = [c for c in found if not c.isprintable()]
    if unprintable:  # a newline or an escape sequence in a class name would forge lines wherever it is shown
        raise LungdxError(
            f"{raw_dir}: class folder names with control characters: {unprintable}; rename them "
            "(the model file refuses such class names)"
        )
    if len(found) < 2:
        raise LungdxError(
            f"{raw_dir}: found {len(found)} class ({found}); a classifier needs at least 2 class "
            f"folders (check the dataset's source and {wanted_key})"
        )
    return found


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
        raise LungdxError(
            f"{record}: not the record the download stage writes ({type(exc).__name__}: "
            f"{exc}); run it again: dvc repro -f download"
        ) from exc


def sample(
    settings: SampleSettings, raw_dir: str | Path, out_dir: str | Path, progress: Progress | None = None
) -> pd.DataFrame:
    """The sample stage: inspect every image of the chosen
    classes, drop duplicates, split each class, write manifest.csv and skipped.csv to out_dir."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise LungdxError(f"{raw_dir}: not found; run the download stage first (dvc repro download)")
    from_source = skipped_by_download(raw_dir)
    classes = find_classes(raw_dir, settings.classes, settings.key("classes"))
    inspected = inspect_all(raw_dir, [rel for cls in classes for rel in class_images(raw_dir, cls)], progress)
    kept, skipped = deduplicate(inspected)
    usable: dict[str, list[dict]] = {cls: [] for cls in classes}
    for item in kept:
        cls = item.path.split("/", 1)[0]
        assert item.shape is not None  # deduplicate keeps readable images only
        usable[cls].append(
            {
                "path": item.path,
                "class": cls,
                "label": classes.index(cls),
                "sha256": item.sha256,
                "mask": item.masks.get("masks", ""),
                "lesion": item.masks.get("lesions", ""),
                "width": item.shape[1],
                "height": item.shape[0],
            }
        )
    for rel, reason in skipped:
        log.warning(f"skipped {raw_dir / rel}: {reason}")
    if from_source:
        log.info(
            f"the download stage skipped {len(from_source)} file(s) of the dataset's source (links, pipes, "
            f"...); they are listed in {out_dir / 'skipped.csv'} as source:<path>"
        )
    manifest = split(usable, classes, settings, raw_dir)
    write(out_dir, manifest, from_source + skipped)
    return manifest


def split(usable: dict[str, list[dict]], classes: list[str], settings: SampleSettings, raw_dir: Path) -> pd.DataFrame:
    """A seeded choice of settings.per_class images per class, each class split into train, val
    and test by the settings' shares; the manifest in SPLITS, label, path order."""
    rng = np.random.default_rng(settings.seed)
    rows = []
    for cls in classes:
        items = usable[cls]
        if not items:
            raise LungdxError(
                f"class '{cls}' has no usable image in {raw_dir / cls / 'images'}; add images "
                f"or leave it out with {settings.key('classes')}"
            )
        n = min(settings.per_class, len(items))
        if n < settings.per_class:
            log.info(
                f"class '{cls}' has {len(items)} usable images, fewer than {settings.key('per_class')}="
                f"{settings.per_class}; using all of them"
            )
        n_train, n_val, n_test = split_counts(n, settings.val_size, settings.test_size)
        if min(n_train, n_val, n_test) < 1:
            raise LungdxError(
                f"class '{cls}': {n} images give train/val/test = {n_train}/{n_val}/{n_test} with "
                f"{settings.key('val_size')}={settings.val_size} and {settings.key('test_size')}="
                f"{settings.test_size}; every split needs at least one image: add images "
                "or change the split sizes"
            )
        chosen = rng.permutation(len(items))[:n]
        splits = ["test"] * n_test + ["val"] * n_val + ["train"] * n_train
        for idx, name in zip(chosen, splits, strict=True):
            rows.append({**items[idx], "split": name})
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    manifest["_split"] = manifest["split"].map(SPLITS.index)
    return manifest.sort_values(["_split", "label", "path"]).drop(columns="_split").reset_index(drop=True)


def write(out_dir: Path, manifest: pd.DataFrame, skipped: list[tuple[str, str]]) -> None:
    """manifest.csv and skipped.csv (path, reason), together, into out_dir."""
    with atomic_dir(out_dir) as tmp:
        manifest.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(tmp / "skipped.csv", index=False, lineterminator="\n")
