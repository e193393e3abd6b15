"""The raw layout the download stage writes, and one look at each of its images.

    data/raw/<Class>/images/<file>     the class's images
    data/raw/<Class>/masks/<file>      lung masks, named as their images (when the source has them)
    data/raw/<Class>/lesions/<file>    lesion masks (synthetic data only)

inspect_all hashes and decodes every image once, in worker processes, and checks its masks: the
sample stage and the external stage read a dataset through it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .images import UnreadableImage, check_lung_mask, decode_gray, native_mask, read_bytes
from .workers import cpu_count, map_in_workers

if TYPE_CHECKING:
    from .workers import Progress

DUPLICATE = "exact duplicate of"  # skipped.csv's reason for a second copy within one class: "exact duplicate of <path>"
LABEL_CONFLICT = "label conflict"  # for every copy of an image found in two classes


def class_images(raw_dir: Path, cls: str) -> list[str]:
    """The files of <cls>/images/, sorted, as paths relative to raw_dir ([] without the folder)."""
    folder = Path(raw_dir) / cls / "images"
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return [p.relative_to(raw_dir).as_posix() for p in files]


class Inspected(NamedTuple):
    """One image of the raw layout, looked at once."""

    path: str  # relative to the raw folder
    sha256: str | None  # of its bytes; None: unreadable
    reason: str  # why it is unreadable ("" when readable)
    shape: tuple[int, int] | None  # (height, width)
    masks: dict[str, str]  # "masks" / "lesions": the usable mask's path
    mask_problems: list[tuple[str, str]]  # (mask path, why it is not usable): the image is kept


def _inspect(args) -> Inspected:
    """Hash and decode one image (and check its masks); runs in a worker process."""
    raw_dir, rel = args
    path = Path(raw_dir) / rel
    try:
        data = read_bytes(path)  # a file over images.MAX_FILE_BYTES is refused from its size, unread
        img = decode_gray(data)  # an image over images.MAX_PIXELS is refused from its header, undecoded
    except UnreadableImage as exc:
        return Inspected(rel, None, str(exc), None, {}, [])
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
                problems.append((candidate.as_posix(), f"unusable mask: {exc}"))
    return Inspected(rel, hashlib.sha256(data).hexdigest(), "", img.shape, masks, problems)


def inspect_all(raw_dir: Path, rels: list[str], progress: Progress | None = None) -> list[Inspected]:
    """Every image at rels (relative to raw_dir) looked at once, in worker processes, in order."""
    jobs = [(str(raw_dir), rel) for rel in rels]
    workers = min(cpu_count(), max(1, len(jobs) // 64))
    results = map_in_workers(_inspect, jobs, workers, chunksize=32)
    return list(progress(results, total=len(jobs), desc="inspect") if progress else results)


def class_of(rel: str) -> str:
    """The class of a path of the raw layout: its first part."""
    return rel.split("/", 1)[0]


def deduplicate(inspected: list[Inspected]) -> tuple[list[Inspected], list[tuple[str, str]]]:
    """The readable images, exact duplicates (the same bytes) within one class kept once, the
    first; an image in more than one class (a label conflict: which label is right is unknown)
    left out of every class. Also (path, reason) for every file left out: unreadable images,
    duplicates, label conflicts, unusable masks."""
    copies: dict[str, list[str]] = {}  # sha256 -> the paths of the images with it, in order
    for item in inspected:
        if item.sha256 is not None:
            copies.setdefault(item.sha256, []).append(item.path)
    kept, skipped = [], []
    for item in inspected:
        if item.sha256 is None:
            skipped.append((item.path, item.reason))
            continue
        skipped += item.mask_problems
        paths = copies[item.sha256]
        other = next((p for p in paths if class_of(p) != class_of(item.path)), None)
        if other is not None:
            skipped.append(
                (item.path, f"{LABEL_CONFLICT}: the same image as {other}; left out of every class it is in")
            )
        elif paths[0] != item.path:
            skipped.append((item.path, f"{DUPLICATE} {paths[0]}"))
        else:
            kept.append(item)
    return kept, skipped
