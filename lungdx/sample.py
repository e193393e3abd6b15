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
in both train and test; an image found in two classes (a label conflict) is left
out of both. Refused, in one line, before anything is written: class folders that
differ only in case or spaces, a class with no usable image, and a class too small
to give each split an image. Warned about: classes still imbalanced (IMBALANCE to 1
or more) after sampling.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .atomic import atomic_dir
from .errors import LungdxError
from .raw import DUPLICATE, LABEL_CONFLICT, Inspected, class_images, class_of, deduplicate, inspect_all
from .splits import COLUMNS, SPLITS

if TYPE_CHECKING:
    from .params import SampleSettings
    from .workers import Progress

log = logging.getLogger(__name__)

IMBALANCE = 3  # warn when the largest class has this many times the images of the smallest, or more
BALANCED_BATCHES = "models.cnn.balanced_batches"  # the training setting that draws the classes equally


def find_classes(raw_dir: Path, wanted: tuple[str, ...], wanted_key: str) -> list[str]:
    """The class folders of raw_dir, or `wanted` (the setting `wanted_key`) in its order."""
    found = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if wanted:
        missing = [c for c in wanted if c not in found]
        if missing:
            raise LungdxError(
                f"params.yaml: {wanted_key} names {missing} which the dataset does not have; "
                f"classes found in {raw_dir}: {found}{_near_misses(missing, found)}"
            )
        _warn_look_alikes_left_out(found, wanted, wanted_key)
        found = list(wanted)
    unprintable = [c for c in found if not c.isprintable()]
    if unprintable:  # a newline or an escape sequence in a class name would forge lines wherever it is shown
        raise LungdxError(
            f"{raw_dir}: class folder names with control characters: {unprintable}; rename them "
            "(the model file refuses such class names)"
        )
    _refuse_look_alikes(found, raw_dir)
    if len(found) < 2:
        raise LungdxError(
            f"{raw_dir}: found {len(found)} class ({found}); a classifier needs at least 2 class "
            f"folders (check the dataset's source and {wanted_key})"
        )
    return found


def loose_name(name: str) -> str:
    """A class name as a reader sees it: case, Unicode form and spaces (at either end, or
    repeated) ignored. Two folders with the same loose name are one class split in two, or
    two classes whose names only a computer tells apart."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def look_alikes(names: list[str]) -> list[list[str]]:
    """The groups of two or more names with the same loose_name, in the order of `names`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(loose_name(name), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def _refuse_look_alikes(classes: list[str], raw_dir: Path) -> None:
    groups = look_alikes(classes)
    if groups:
        named = "; ".join(" and ".join(repr(name) for name in group) for group in groups)
        raise LungdxError(
            f"{raw_dir}: class folders {named} differ only in case or spaces: merge them into one "
            "folder if they are one class, or rename one if they are two (in the dataset's source, "
            "then dvc repro -f download)"
        )


def _near_misses(missing: list[str], found: list[str]) -> str:
    """For the error on names dataset.classes misses: the folders that differ from one only in
    case or spaces ("" when none)."""
    pairs = [(m, f) for m in missing for f in found if loose_name(m) == loose_name(f)]
    return "".join(
        f"; the folder {folder!r} differs from {name!r} only in case or spaces: write its name "
        "exactly, or rename the folder"
        for name, folder in pairs
    )


def _warn_look_alikes_left_out(found: list[str], wanted: tuple[str, ...], wanted_key: str) -> None:
    for group in look_alikes(found):
        for name in (n for n in group if n not in wanted):
            chosen = [n for n in group if n in wanted]
            if chosen:
                log.warning(
                    f"{wanted_key} leaves out the class folder {name!r}, which differs from {chosen[0]!r} "
                    "only in case or spaces: its images are not used; if they are one class, merge the "
                    "folders in the dataset's source"
                )


def split_counts(n: int, val_size: float, test_size: float) -> tuple[int, int, int]:
    n_test = int(round(n * test_size))
    n_val = int(round(n * val_size))
    return n - n_val - n_test, n_val, n_test


def min_class_size(val_size: float, test_size: float) -> int | None:
    """The fewest images of a class that give each split (train, val, test) at least one with
    these shares (None if not even a million do)."""
    start = max(1, int(0.5 / min(val_size, test_size)))  # below it, round() gives the smaller split 0
    ok = (n for n in range(start, start + 1_000_000) if min(split_counts(n, val_size, test_size)) >= 1)
    return next(ok, None)


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
    for rel, reason in skipped:
        log.warning(f"skipped {raw_dir / rel}: {reason}")
    if from_source:
        log.info(
            f"the download stage skipped {len(from_source)} file(s) of the dataset's source (links, pipes, "
            f"...); they are listed in {out_dir / 'skipped.csv'} as source:<path>"
        )
    usable = usable_images(kept, classes)
    for cls in classes:
        if not usable[cls]:
            raise no_usable_image(cls, [i.path for i in inspected], skipped, raw_dir, settings)
    manifest = split(usable, classes, settings, raw_dir)
    warn_label_conflicts(skipped, out_dir)
    warn_imbalance(manifest, classes, settings)
    write(out_dir, manifest, from_source + skipped)
    return manifest


def usable_images(kept: list[Inspected], classes: list[str]) -> dict[str, list[dict]]:
    """The manifest rows (split not yet chosen) of the kept images, by class."""
    usable: dict[str, list[dict]] = {cls: [] for cls in classes}
    for item in kept:
        cls = class_of(item.path)
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
    return usable


def no_usable_image(
    cls: str, files: list[str], skipped: list[tuple[str, str]], raw_dir: Path, settings: SampleSettings
) -> LungdxError:
    """The error for a class none of whose images is usable, saying why: no file, unreadable
    files, images that are also in another class."""
    folder = raw_dir / cls / "images"
    mine = {f for f in files if class_of(f) == cls}
    left_out = [(rel, reason) for rel, reason in skipped if rel in mine]
    conflicts = [(rel, reason) for rel, reason in left_out if reason.startswith(LABEL_CONFLICT)]
    unreadable = [(rel, reason) for rel, reason in left_out if not reason.startswith((LABEL_CONFLICT, DUPLICATE))]
    why, todo = [], []
    if conflicts:
        rel, reason = conflicts[0]
        other = reason.split("the same image as ", 1)[1].split(";", 1)[0]
        why.append(f"{len(conflicts)} also in another class (label conflict; e.g. {rel} is the same image as {other})")
        todo.append("remove each copy from the class it does not belong to")
    if unreadable:
        rel, reason = unreadable[0]
        why.append(f"{len(unreadable)} unreadable (e.g. {rel}: {reason})")
        todo.append("replace the unreadable files")
    detail = f"all {len(mine)} of its files were left out ({'; '.join(why)}), each named in a warning above"
    return LungdxError(
        f"class '{cls}' has no usable image in {folder}: {detail if mine else 'the folder is empty'}; "
        f"{', '.join(todo) if mine else 'add images'}, or leave the class out with {settings.key('classes')}"
    )


def split(usable: dict[str, list[dict]], classes: list[str], settings: SampleSettings, raw_dir: Path) -> pd.DataFrame:
    """A seeded choice of settings.per_class images per class, each class split into train, val
    and test by the settings' shares; the manifest in SPLITS, label, path order."""
    rng = np.random.default_rng(settings.seed)
    rows = []
    for cls in classes:
        items = usable[cls]
        n = min(settings.per_class, len(items))
        if n < settings.per_class:
            log.info(
                f"class '{cls}' has {_images(len(items), 'usable image')}, fewer than "
                f"{settings.key('per_class')}={settings.per_class}; using all of them"
            )
        n_train, n_val, n_test = split_counts(n, settings.val_size, settings.test_size)
        if min(n_train, n_val, n_test) < 1:
            raise too_few_for_the_splits(cls, n, len(items), settings, raw_dir)
        chosen = rng.permutation(len(items))[:n]
        splits = ["test"] * n_test + ["val"] * n_val + ["train"] * n_train
        for idx, name in zip(chosen, splits, strict=True):
            rows.append({**items[idx], "split": name})
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    manifest["_split"] = manifest["split"].map(SPLITS.index)
    return manifest.sort_values(["_split", "label", "path"]).drop(columns="_split").reset_index(drop=True)


def _images(n: int, what: str = "image") -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def too_few_for_the_splits(cls: str, n: int, available: int, settings: SampleSettings, raw_dir: Path) -> LungdxError:
    """The error for a class whose n images leave a split without one: every split needs at
    least one image of each class (val for early stopping, test for its scores)."""
    n_train, n_val, n_test = split_counts(n, settings.val_size, settings.test_size)
    sizes = f"{settings.key('val_size')}={settings.val_size} and {settings.key('test_size')}={settings.test_size}"
    need = min_class_size(settings.val_size, settings.test_size)
    needs = f"at least {need} images per class with these shares" if need else "more images per class"
    if n < available:  # sample.per_class, not the data, is the limit
        todo = f"raise {settings.key('per_class')} to {need} or more" if need else "change the split sizes"
        return LungdxError(
            f"{settings.key('per_class')}={settings.per_class} gives class '{cls}' train/val/test = "
            f"{n_train}/{n_val}/{n_test} with {sizes}; every split needs at least one image of each "
            f"class, so {needs}: {todo}"
        )
    return LungdxError(
        f"class '{cls}' has {_images(n, 'usable image')} in {raw_dir / cls / 'images'}: train/val/test = "
        f"{n_train}/{n_val}/{n_test} with "
        f"{sizes}; every split needs at least one image of each class, so {needs}: add images to the "
        f"class in the dataset's source, or leave it out with {settings.key('classes')}"
        + (", or change the split sizes" if n >= len(SPLITS) else "")
    )


def warn_label_conflicts(skipped: list[tuple[str, str]], out_dir: Path) -> None:
    """One line on the images found in two classes, which deduplicate left out of every class."""
    conflicts = [(rel, reason) for rel, reason in skipped if reason.startswith(LABEL_CONFLICT)]
    if conflicts:
        rel, reason = conflicts[0]
        log.warning(
            f"{_images(len(conflicts), 'file')} left out for a label conflict: the same image in two "
            f"classes (e.g. {rel}: {reason.split(': ', 1)[1]}); the list is in {out_dir / 'skipped.csv'}: "
            "remove each copy from the class it does not belong to"
        )


def warn_imbalance(manifest: pd.DataFrame, classes: list[str], settings: SampleSettings) -> None:
    """A warning when the largest class has IMBALANCE times the images of the smallest or more,
    after sampling: a model trained on them leans towards the larger classes."""
    counts = manifest["class"].value_counts().reindex(classes, fill_value=0)
    big, small = str(counts.idxmax()), str(counts.idxmin())
    if counts[big] >= IMBALANCE * counts[small]:
        log.warning(
            f"class '{big}' has {counts[big]} images and class '{small}' {counts[small]} after sampling "
            f"({counts[big] / counts[small]:.1f}x): a model trained on them leans towards the larger "
            f"classes; set {BALANCED_BATCHES}: true (each training batch draws the classes equally), "
            f"or cap every class with a lower {settings.key('per_class')} (now {settings.per_class})"
        )


def write(out_dir: Path, manifest: pd.DataFrame, skipped: list[tuple[str, str]]) -> None:
    """manifest.csv and skipped.csv (path, reason), together, into out_dir."""
    with atomic_dir(out_dir) as tmp:
        manifest.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(tmp / "skipped.csv", index=False, lineterminator="\n")
