"""Checks on a folder or zip source before and while the download stage copies it.

- Where it may be (check_source_location): not the project itself, nor a folder containing it,
  nor anything under a stage output of dvc.yaml (DVC deletes or replaces those when a stage
  runs, and download replaces data/raw whole), nor under .dvc/ or .git/.
- Which files of a folder are taken (walk_source, regular_file_in, open_inside): only regular
  files that resolve inside the source; dangling links, links leading outside, links to
  folders, pipes, sockets and devices are skipped, reported and listed (report_skipped).
  Files are opened without following any link and must still be regular once open.
- What a zip may declare (ZipLimits, check_zip_limits): size per entry, compression ratio,
  entry count, overlapping entries, and the total against the free space, all before anything
  is extracted; no entry is written past the size it declares (copy_at_most). The same checks,
  with a model's limits, guard a model file (lungdx.model_file).
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from .atomic import check_free_space, human_bytes
from .errors import LungdxError
from .images import MAX_FILE_BYTES
from .pipeline import pipeline_outputs

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

CHUNK = 1 << 20
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


def usable(parts: tuple[str, ...]) -> bool:
    """Not hidden, not an operating system's litter: a path a dataset may hold."""
    return not any(p.startswith(".") or p in IGNORED_NAMES for p in parts)


class SourceError(LungdxError):
    """A refusal whose message already names the source (not prefixed again)."""


ZIP_TODO = (
    "check where the zip came from; if it is what you meant, unpack its class folders yourself "
    "and point {what} at that folder"
)


@dataclass(frozen=True)
class ZipLimits:
    """What a zip may declare before anything is extracted, and what its refusals say is usual
    and what to do. The defaults are a dataset's: the real COVID-19 Radiography Database (21,165
    PNG images ~299x299 and as many 256x256 masks, ~800 MB zipped) is far inside: its largest
    image is a few hundred KB and PNGs barely compress (ratio ~1)."""

    max_entries: int = 1_000_000  # entries in the whole zip (the database has ~42,000)
    max_entry_bytes: int = MAX_FILE_BYTES  # per extracted file: 256 MiB, what sample reads at most
    max_ratio: float = 100.0  # declared size / compressed size, for files ...
    ratio_from_bytes: int = 1 << 20  # ... over 1 MiB (tiny files may compress very well)
    max_total_bytes: int | None = None  # all entries together; None: only the free space limits them
    usual_entries: str = "the full COVID-19 Radiography Database has about 42,000"
    usual_entry: str = "a chest X-ray image or mask is a few MB at most"
    usual_ratio: str = "X-ray images barely compress"
    todo: str = ZIP_TODO


ZIP_LIMITS = ZipLimits()


# --- where a folder or zip source may be -------------------------------------------------

KEEP_AWAY = "copy the images outside the project (e.g. ~/data/covid) and point {what} there"


def _forms(path: Path) -> list[Path]:
    """A path as written (absolute, '..' folded) and resolved (every symbolic link followed)."""
    return list(dict.fromkeys([Path(os.path.abspath(path)), path.resolve()]))


def _file_ids(paths: Iterable[Path]) -> set[tuple[int, int]]:
    ids = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def _within(inner: list[Path], outer: list[Path]) -> bool:
    """Whether `inner` is `outer` or below it: by path, or by the folders themselves (device and
    inode), which also sees through a bind mount or a second mount of the same file system."""
    if any(i.is_relative_to(o) for i in inner for o in outer):
        return True
    return bool(_file_ids(outer) & _file_ids(p for i in inner for p in (i, *i.parents)))


def check_source_location(
    location: str | Path,
    value: str,
    project_root: str | Path,
    out_dir: str | Path,
    what: str = "the source",
    reader: str = "the download",
) -> None:
    """Refuse a folder or zip source at `location` (`value`: as written in `what`, the setting or
    argument that names it) where the pipeline itself would destroy or re-read it; `reader`
    names what reads it into out_dir.

    `project_root` is where dvc.yaml lives (stages run from there); without a dvc.yaml there
    only the output folder is checked. Paths are compared as written and resolved, so a
    symbolic link into data/raw is caught as well as data/raw itself.
    """
    src = _forms(Path(location))
    out = _forms(Path(out_dir))
    root_path = Path(project_root)
    shown = f"{what} = {value!r}"
    keep_away = KEEP_AWAY.format(what=what)
    if (root_path / "dvc.yaml").is_file():
        _check_not_the_project(src, root_path, shown, keep_away)
        _check_not_in_own_folders(src, root_path, shown, keep_away)
        _check_apart_from_outputs(src, root_path, shown, what, reader, keep_away)
    _check_apart_from_out_dir(src, out, out_dir, shown, what, reader)


def _check_not_the_project(src: list[Path], root_path: Path, shown: str, keep_away: str) -> None:
    """Refuse the project itself, or a folder that contains it."""
    root = _forms(root_path)
    if _within(src, root) and _within(root, src):
        raise LungdxError(
            f"{shown} is the project itself ({root[-1]}): it holds the pipeline's outputs, "
            "which DVC deletes or replaces when a stage runs, and DVC's and git's own "
            f"files; {keep_away}"
        )
    if _within(root, src):
        raise LungdxError(
            f"{shown} contains the project ({root[-1]}): it holds the pipeline's outputs, "
            "which DVC deletes or replaces when a stage runs, and DVC's and git's own "
            f"files; {keep_away}"
        )


def _check_not_in_own_folders(src: list[Path], root_path: Path, shown: str, keep_away: str) -> None:
    """Refuse anything under a .dvc/ or .git/ of the project or of a folder above it."""
    for folder in [root_path.absolute(), *root_path.absolute().parents]:
        for name, holder in ((".dvc", "DVC's own folder (its cache and settings)"), (".git", "git's own folder")):
            own = folder / name
            if own.exists() and _within(src, _forms(own)):
                raise LungdxError(
                    f"{shown} is inside {name}/ ({own}), {holder}: files there are its "
                    f"bookkeeping, not a dataset; {keep_away}"
                )


def _check_apart_from_outputs(
    src: list[Path], root_path: Path, shown: str, what: str, reader: str, keep_away: str
) -> None:
    """Refuse a source that is, is inside or contains an output of the pipeline (dvc.yaml's)."""
    try:
        outputs = pipeline_outputs(root_path)
    except LungdxError as exc:
        raise LungdxError(f"{exc}; until then {what} cannot be checked against the pipeline's outputs") from exc
    for stage, rel in outputs:
        target = _forms(root_path / rel)
        if _within(src, target):
            where = rel if _within(target, src) else f"inside {rel}"
            raise LungdxError(
                f"{shown} is {where}, an output of this pipeline (stage {stage}): DVC "
                "deletes or replaces a stage's outputs when it runs, so images kept there "
                f"are lost; {keep_away}"
            )
        if _within(target, src):
            raise LungdxError(
                f"{shown} contains {rel}, an output of this pipeline (stage {stage}): "
                f"{reader} would read the pipeline's own outputs, which DVC deletes or "
                f"replaces when a stage runs; point {what} at a folder that holds "
                "only the images (e.g. ~/data/covid)"
            )


def _check_apart_from_out_dir(
    src: list[Path], out: list[Path], out_dir: str | Path, shown: str, what: str, reader: str
) -> None:
    """Refuse a source that is, is inside or contains the folder `reader` writes (out_dir, whose
    forms are `out`)."""
    if _within(src, out):
        where = "" if _within(out, src) else "inside "
        raise LungdxError(
            f"{shown} is {where}the output folder {out_dir} of {reader}, which it "
            "replaces whole, so images kept there are lost; copy them elsewhere and point "
            f"{what} there"
        )
    if _within(out, src):
        raise LungdxError(
            f"{shown} contains the output folder {out_dir} of {reader}: it would "
            f"read its own output; point {what} at a folder that holds only the images"
        )


# --- which files of a folder are taken ------------------------------------------------------


def report_skipped(skipped: list[dict], shown: str, rel: str, reason: str) -> None:
    """Report one file of the source that is not taken: a warning now, a line in source.json."""
    log.warning(f"skipped {shown}: {reason}")
    skipped.append({"path": rel, "reason": reason})


_KINDS = {
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "folder",
    stat.S_IFLNK: "symbolic link",
}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def file_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "special file")


def regular_file_in(root: Path, rel: str) -> tuple[tuple[str, ...], int] | str:
    """Where a planned file of the folder `root` (resolved) really is: (its path's parts relative
    to root, its size), or the reason it is not taken."""
    path = root / rel
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"could not be read ({exc.strerror})"
    if stat.S_ISREG(st.st_mode):
        return PurePosixPath(rel).parts, st.st_size
    if not stat.S_ISLNK(st.st_mode):
        return f"{file_kind(st.st_mode)}, not a regular file"
    target = os.readlink(path)
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return f"dangling symbolic link (its target {target} does not exist)"
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to Python 3.12, OSError after
        return f"symbolic link that cannot be followed ({target}: {getattr(exc, 'strerror', None) or exc})"
    if not real.is_relative_to(root):
        return f"symbolic link to {real}, outside the source"
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"symbolic link to {real}, which could not be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"symbolic link to {real}, a {file_kind(st.st_mode)}, not a regular file"
    return real.relative_to(root).parts, st.st_size


def open_inside(root_fd: int, parts: tuple[str, ...]) -> int:
    """Open root/parts for reading without following any symbolic link on the way (every folder
    with O_NOFOLLOW from the one before, the file with O_NOFOLLOW and O_NONBLOCK, so a pipe
    swapped in cannot block); the caller checks with fstat that it is a regular file."""
    fd, opened = root_fd, []
    try:
        for part in parts[:-1]:
            fd = os.open(part, os.O_RDONLY | DIRECTORY | NOFOLLOW, dir_fd=fd)
            opened.append(fd)
        return os.open(parts[-1], os.O_RDONLY | NOFOLLOW | NONBLOCK, dir_fd=fd)
    finally:
        for d in opened:
            os.close(d)


def copy_at_most(fin: IO[bytes], fout: IO[bytes], limit: int) -> int:
    """Copy up to `limit` bytes; returns how many were copied."""
    left = limit
    while left > 0:
        chunk = fin.read(min(CHUNK, left))
        if not chunk:
            break
        fout.write(chunk)
        left -= len(chunk)
    return limit - left


def walk_source(root: Path, skipped: list[dict], shown: str) -> tuple[list[str], list[str]]:
    """Files and folders below root (POSIX paths relative to it). Symbolic links to folders are
    not followed; they, and folders that cannot be read, are skipped and reported."""
    files, dirs = [], []

    def unreadable(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(root).as_posix() if exc.filename else "?"
        if rel != "." and usable(PurePosixPath(rel).parts):
            report_skipped(skipped, f"{shown}/{rel}", rel, f"folder that could not be read ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        rel = Path(dirpath).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirnames.sort()  # one order on every file system: the same warnings, the same source.json
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                if usable(PurePosixPath(rel + d).parts):
                    report_skipped(skipped, f"{shown}/{rel}{d}", rel + d, "symbolic link to a folder, not followed")
        dirs += [rel + d for d in dirnames]
        files += [rel + f for f in sorted(filenames)]
    return files, dirs


# --- what a zip may declare --------------------------------------------------------------


def zip_entry_skip_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry is not a regular file (its unix mode, external_attr >> 16), or None."""
    fmt = stat.S_IFMT(info.external_attr >> 16)
    if fmt in (0, stat.S_IFREG):
        return None
    if fmt == stat.S_IFLNK:
        return "symbolic link, not extracted"
    return f"{file_kind(fmt)}, not a regular file"


def unsafe_name(name: str) -> bool:
    """An entry or file name that could write outside data/raw or means another path elsewhere:
    absolute, with `..`, a backslash (a Windows separator, or a trick) or a NUL."""
    return name.startswith("/") or ".." in PurePosixPath(name).parts or "\\" in name or "\0" in name


def check_entry_count(shown: str, n_entries: int, limits: ZipLimits) -> None:
    """Refuse a zip of too many entries, before anything looks at each of them."""
    if n_entries > limits.max_entries:
        raise SourceError(
            f"{shown}: holds {n_entries:,} entries, more than the {limits.max_entries:,} allowed "
            f"({limits.usual_entries}): refusing a possible zip bomb before extracting "
            f"anything; {limits.todo}"
        )


def check_zip_limits(
    shown: str, zip_bytes: int, infos: list[zipfile.ZipInfo], limits: ZipLimits, space_at: str | Path | None = None
) -> None:
    """Refuse a zip bomb from what its central directory declares, before extracting anything;
    with `space_at`, also a total that the free space there could not hold."""
    for info in infos:
        _check_entry(shown, info, limits)
    total = sum(i.file_size for i in infos)
    _check_totals(shown, zip_bytes, infos, total, limits)
    if space_at is not None:
        check_free_space(space_at, total, f"the {len(infos):,} files to extract from {shown}")


def _check_entry(shown: str, info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    """Refuse one entry that declares too much once extracted, or inflates too much."""
    size, packed = info.file_size, info.compress_size
    if size > limits.max_entry_bytes:
        raise SourceError(
            f"{shown}: entry {info.filename!r} declares {size:,} bytes ({human_bytes(size)}) once "
            f"extracted, more than the {limits.max_entry_bytes:,} bytes "
            f"({limits.max_entry_bytes / 2**20:g} MiB) allowed per file ({limits.usual_entry}): "
            f"refusing a possible zip bomb before extracting anything; {limits.todo}"
        )
    if size > limits.ratio_from_bytes and size > limits.max_ratio * packed:
        ratio = f"{size / packed:,.0f}-fold" if packed else "from nothing"
        raise SourceError(
            f"{shown}: entry {info.filename!r} inflates {ratio} ({packed:,} bytes to {size:,}), "
            f"more than the {limits.max_ratio:g}-fold allowed for files over "
            f"{limits.ratio_from_bytes / 2**20:g} MiB ({limits.usual_ratio}): refusing "
            f"a possible zip bomb before extracting anything; {limits.todo}"
        )


def _check_totals(shown: str, zip_bytes: int, infos: list[zipfile.ZipInfo], total: int, limits: ZipLimits) -> None:
    """Refuse entries that together inflate too much, declare too much (`total`), or overlap."""
    todo = limits.todo
    if total > limits.ratio_from_bytes and total > limits.max_ratio * zip_bytes:  # many small bombs
        raise SourceError(
            f"{shown}: its entries to extract declare {total:,} bytes, {total / max(zip_bytes, 1):,.0f} "
            f"times the zip's own {zip_bytes:,} bytes, more than the {limits.max_ratio:g}-fold "
            f"allowed ({limits.usual_ratio}): refusing a possible zip bomb before "
            f"extracting anything; {todo}"
        )
    if limits.max_total_bytes is not None and total > limits.max_total_bytes:
        raise SourceError(
            f"{shown}: its entries to extract declare {total:,} bytes ({human_bytes(total)}) in all, "
            f"more than the {limits.max_total_bytes:,} bytes ({limits.max_total_bytes / 2**30:g} GiB) "
            f"allowed: refusing a possible zip bomb before extracting anything; {todo}"
        )
    packed_total = sum(i.compress_size for i in infos)
    if packed_total > zip_bytes:
        raise SourceError(
            f"{shown}: its entries to extract declare {packed_total:,} bytes of compressed data, "
            f"more than the zip's own {zip_bytes:,} bytes: entries overlap (a zip bomb technique) "
            f"or the zip is corrupt; refusing to extract anything; {todo}"
        )
