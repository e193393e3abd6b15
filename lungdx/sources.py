"""Bringing a dataset source into the raw layout (lungdx.raw): a local folder, a local .zip, an
http(s) URL of a .zip, or a Kaggle dataset; the download stage and the external stage read
their sources through it.

Folders and zips may use the current Kaggle layout (<Class>/images, <Class>/masks, maybe under
one top folder with metadata files beside the class folders) or the old flat one (<Class>/*.png).

The source is only ever read. Files are copied (not hard-linked) because DVC may later make its
cache files read-only, and a hard link would carry that change back into the user's source folder.

Careless and hostile sources (links, pipes, zip bombs) are refused or skipped by
lungdx.source_checks; one class folder of the Kaggle layout given as the source is refused by
plan_layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .atomic import check_free_space
from .errors import DiskFull, LungdxError
from .images import IMAGE_SUFFIXES
from .source_checks import (
    DIRECTORY,
    ZIP_LIMITS,
    SourceError,
    ZipLimits,
    check_entry_count,
    check_source_location,
    check_zip_limits,
    copy_at_most,
    file_kind,
    open_inside,
    regular_file_in,
    report_skipped,
    unsafe_name,
    usable,
    walk_source,
    zip_entry_skip_reason,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

Parts = tuple[str, ...]  # a path's parts, as PurePosixPath.parts gives them
SUBFOLDERS = ("images", "masks", "lesions")
SOURCE_FORMS = "synthetic | kaggle | a path to a local folder | a path to a local .zip | an http(s) URL of a .zip"


@dataclass(frozen=True)
class Source:
    kind: str  # synthetic | kaggle | folder | zip | url
    location: str  # path, URL or Kaggle handle


def resolve_source(
    value: object, kaggle_handle: str | None = None, what: str = "the source", forms: str = SOURCE_FORMS
) -> Source:
    """Classify a source as the user wrote it (`what` names it in messages: the param, or the
    command's argument; `forms` what it may be); fails before any work on a form we do not know."""
    if not isinstance(value, str) or not value.strip():
        raise LungdxError(f"{what} = {value!r} is not allowed: {forms}")
    value = value.strip()
    if value == "synthetic":
        return Source("synthetic", "synthetic")
    if value == "kaggle":
        if kaggle_handle is None:
            raise ValueError("resolve_source: a kaggle source needs its kaggle_handle")
        return Source("kaggle", kaggle_handle)
    if value.startswith(("http://", "https://")):
        return Source("url", value)
    if "://" in value:
        raise LungdxError(f"{what} = {value!r} is not allowed: {forms} (only http and https URLs are supported)")
    path = Path(value).expanduser()
    if path.is_dir():
        return Source("folder", str(path))
    if path.is_file():
        if zipfile.is_zipfile(path) or path.suffix.lower() == ".zip":
            return Source("zip", str(path))
        raise LungdxError(f"{what} = {value!r} is not allowed: a folder or a .zip file; this file is neither")
    raise LungdxError(f"{what} = {value!r} is not allowed: {forms}; no file or folder exists at {path.resolve()}")


# --- layout detection, shared by folders and zips ---------------------------------------


def plan_layout(
    files: Sequence[str], dirs: Sequence[str] = (), where: str = "the source", what: str = "the source"
) -> dict[str, str]:
    """Map source-relative POSIX file paths to raw-layout paths (<Class>/<sub>/<name>).

    The class root is the shallowest folder with a child folder that either has an
    `images/` subfolder (Kaggle layout) or holds image files directly (flat layout).
    Every non-hidden child folder of the root is then a class, even an empty one,
    so a class with no usable image is reported by name later instead of vanishing.
    Classes that are all images/, masks/ or lesions/ mean the source is one class folder
    of the Kaggle layout: refused (SourceError naming `where`, the source as the user gave it, and
    `what`, the setting or argument that names it).
    """
    entries = [PurePosixPath(f).parts for f in files]
    entries = [e for e in entries if e and usable(e)]
    all_dirs = {PurePosixPath(d).parts for d in dirs if d and usable(PurePosixPath(d).parts)}
    for e in entries:
        all_dirs.update(e[:i] for i in range(1, len(e)))
    root = _class_root(entries, all_dirs)
    n = len(root)
    classes = sorted({d[n] for d in all_dirs if len(d) == n + 1 and d[:n] == root})
    _refuse_one_class_folder(classes, root, where, what)
    return _planned_files(entries, all_dirs, root, classes)


def _is_class(folder: Parts, entries: list[Parts]) -> bool:
    """Whether `folder` holds image files directly (flat layout) or an images/ subfolder of them
    (Kaggle layout)."""
    n = len(folder)
    return any(
        e[:n] == folder
        and (
            (len(e) == n + 1 and PurePosixPath(e[-1]).suffix.lower() in IMAGE_SUFFIXES)
            or (len(e) == n + 2 and e[n] == "images")
        )
        for e in entries
    )


def _class_root(entries: list[Parts], all_dirs: set[Parts]) -> Parts:
    """The shallowest folder holding a class folder (the first by name among equals)."""
    roots = sorted({d[:-1] for d in all_dirs if _is_class(d, entries)}, key=lambda r: (len(r), r))
    if not roots:
        raise LungdxError(
            "no class folders found: expected <Class>/images/*.png (Kaggle layout) "
            "or <Class>/*.png (flat layout), maybe under one top folder"
        )
    return roots[0]


def _refuse_one_class_folder(classes: list[str], root: Parts, where: str, what: str) -> None:
    """Classes that are all images/, masks/ or lesions/: the source is one class folder."""
    if not set(classes) <= set(SUBFOLDERS):
        return
    names = [f"{c}/" for c in classes]
    held = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    folder = where + "".join(f"/{part}" for part in root)
    raise SourceError(
        f"{folder} looks like one class folder of the Kaggle layout (it holds {held}); point "
        f"{what} at the folder that holds the class folders (COVID/, Normal/, ...)"
    )


def _planned_files(entries: list[Parts], all_dirs: set[Parts], root: Parts, classes: list[str]) -> dict[str, str]:
    """Each file of a class under `root` -> its raw-layout path, and "<dir><Class>" -> its images/
    folder, so a class without a usable file still has its folder."""
    n = len(root)
    plan = {}
    for e in entries:
        if e[:n] != root or len(e) < n + 2 or e[n] not in classes:
            continue
        cls, rest = e[n], e[n + 1 :]
        kaggle = (root + (cls, "images")) in all_dirs
        if kaggle and len(rest) == 2 and rest[0] in SUBFOLDERS:
            plan["/".join(e)] = f"{cls}/{rest[0]}/{rest[1]}"
        elif not kaggle and len(rest) == 1:
            plan["/".join(e)] = f"{cls}/images/{rest[0]}"
    for cls in classes:  # keep empty classes visible
        plan.setdefault(f"<dir>{cls}", f"{cls}/images/")
    return plan


def _safe_destination(out_dir: Path, rel: str) -> Path:
    """Refuse any destination outside out_dir (zip slip), whatever the entry name was."""
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise LungdxError(f"refusing unsafe path in the source: {rel!r}")
    dest = (out_dir / Path(*parts)).resolve()
    if not dest.is_relative_to(out_dir.resolve()):
        raise LungdxError(f"refusing path outside the output folder: {rel!r}")
    return dest


def _materialise(plan: dict[str, str], out_dir: Path, copy_one: Callable[[str, Path], bool]) -> int:
    """Create the planned files with copy_one(source name, destination); it returns whether it
    copied (False: skipped, already reported)."""
    count = 0
    for src, rel in plan.items():
        if src.startswith("<dir>"):
            _safe_destination(out_dir, rel.rstrip("/")).mkdir(parents=True, exist_ok=True)
            continue
        dest = _safe_destination(out_dir, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        count += bool(copy_one(src, dest))
    return count


def import_folder(
    src: Path,
    out_dir: Path,
    skipped: list[dict] | None = None,
    space_at: str | Path | None = None,
    what: str = "the source",
) -> int:
    """Copy the class images and masks of a folder into the raw layout; returns the count.

    Only regular files that resolve inside the source are read (see regular_file_in and
    open_inside); every other planned file is skipped, reported and appended to `skipped`.
    The total is checked against the free space at `space_at` (default out_dir) first. `what`:
    the setting or argument that names the source, in messages.
    """
    skipped = [] if skipped is None else skipped
    shown = str(src).rstrip("/") or "/"
    root = Path(src).resolve()
    plan = _folder_plan(root, skipped, shown, what)
    where, total = _regular_files(plan, root, skipped, shown)
    check_free_space(space_at or out_dir, total, f"the {len(where):,} files of {shown}")

    root_fd = os.open(root, os.O_RDONLY | DIRECTORY)
    try:

        def copy_one(name: str, dest: Path) -> bool:
            parts, size = where[name]
            return _copy_inside(root_fd, parts, size, dest, skipped, f"{shown}/{name}", name)

        return _materialise(plan, out_dir, copy_one)
    finally:
        os.close(root_fd)


def _folder_plan(root: Path, skipped: list[dict], shown: str, what: str) -> dict[str, str]:
    """plan_layout of the folder `root` (shown as `shown`), its files with unsafe names skipped."""
    files, dirs = walk_source(root, skipped, shown)
    for name in [f for f in files if unsafe_name(f)]:  # a backslash is legal in a Linux file name
        report_skipped(skipped, f"{shown}/{name}", name, "unsafe name (with a backslash), not copied")
        files.remove(name)
    try:
        return plan_layout(files, dirs, where=shown, what=what)
    except SourceError:
        raise
    except LungdxError as exc:
        raise SourceError(f"{shown}: {exc}") from exc


def _regular_files(
    plan: dict[str, str], root: Path, skipped: list[dict], shown: str
) -> tuple[dict[str, tuple[Parts, int]], int]:
    """Where each planned file really is and its size (regular_file_in), and their total; a file
    that is not taken is skipped, reported and removed from `plan`."""
    where, total = {}, 0
    for name in list(plan):
        if name.startswith("<dir>"):
            continue
        found = regular_file_in(root, name)
        if isinstance(found, str):
            report_skipped(skipped, f"{shown}/{name}", name, found)
            del plan[name]
        else:
            where[name] = found
            total += found[1]
    return where, total


def _copy_inside(root_fd: int, parts: Parts, size: int, dest: Path, skipped: list[dict], shown: str, rel: str) -> bool:
    """Copy the file at `parts` below the folder root_fd to dest, at most `size` bytes; False
    (skipped and reported) if it is no longer a regular file inside the source."""
    try:
        fd = open_inside(root_fd, parts)
    except OSError as exc:
        reason = (
            "changed while being copied: a symbolic link appeared on its path"
            if exc.errno in (errno.ELOOP, errno.ENOTDIR)
            else f"could not be read ({exc.strerror})"
        )
        report_skipped(skipped, shown, rel, reason)
        return False
    with os.fdopen(fd, "rb", buffering=0) as fin:
        mode = os.fstat(fin.fileno()).st_mode
        if not stat.S_ISREG(mode):
            report_skipped(
                skipped, shown, rel, f"changed while being copied: now a {file_kind(mode)}, not a regular file"
            )
            return False
        with open(dest, "wb") as fout:  # never more than it had when checked: a file
            copy_at_most(fin, fout, size)  # growing meanwhile cannot fill the disk
    return True


def import_zip(
    path: Path,
    out_dir: Path,
    skipped: list[dict] | None = None,
    limits: ZipLimits = ZIP_LIMITS,
    shown: str | None = None,
    space_at: str | Path | None = None,
    what: str = "the source",
) -> int:
    """Extract only the class images and masks of a zip, straight into the raw layout.

    `shown` names the zip in messages (the URL for a downloaded one). Unsafe names, symbolic
    links and special files are skipped, reported and appended to `skipped`; then the entries
    to extract are checked (check_zip_limits) before any is; none is written past its size.
    """
    skipped = [] if skipped is None else skipped
    shown = shown or str(path)
    limits = dataclasses.replace(limits, todo=limits.todo.format(what=what))
    with _zip_errors(shown, what), zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        check_entry_count(shown, len(infos), limits)
        by_name = _entries_by_name(infos, skipped, shown)
        names = list(by_name)
        plan = plan_layout(
            [n for n in names if not n.endswith("/")],
            [n.rstrip("/") for n in names if n.endswith("/")],
            where=shown,
            what=what,
        )
        members = _regular_members(plan, by_name, skipped, shown)
        check_zip_limits(shown, os.path.getsize(path), list(members.values()), limits, space_at or out_dir)

        def copy_one(name: str, dest: Path) -> bool:
            with zf.open(members[name]) as fin, open(dest, "wb") as fout:
                copy_at_most(fin, fout, members[name].file_size)  # zipfile stops there too
            return True

        return _materialise(plan, out_dir, copy_one)


@contextlib.contextmanager
def _zip_errors(shown: str, what: str) -> Iterator[None]:
    """What reading the zip `shown` raises, as one LungdxError naming it (refusals that already
    name it pass unchanged)."""
    try:
        yield
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as exc:
        raise LungdxError(
            f"{shown}: not a valid zip file ({exc}); if it was downloaded, it may be incomplete: download it again"
        ) from exc
    except NotImplementedError as exc:  # e.g. Deflate64, which Windows uses for zips over 2 GB
        raise LungdxError(
            f"{shown}: cannot be extracted here ({exc}); unpack it with another tool and point {what} at the folder"
        ) from exc
    except (SourceError, DiskFull):
        raise
    except LungdxError as exc:
        raise LungdxError(f"{shown}: {exc}") from exc


def _entries_by_name(infos: list[zipfile.ZipInfo], skipped: list[dict], shown: str) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by their tidy name (plan_layout tidies './A/x', 'top//A/x'), a folder's
    ending in "/"; entries with unsafe names are skipped and reported."""
    by_name = {}
    for info in infos:
        if unsafe_name(info.filename):
            report_skipped(
                skipped,
                f"{shown}/{info.filename}",
                info.filename,
                "unsafe name (absolute, with .. or a backslash), never extracted",
            )
        else:
            by_name["/".join(PurePosixPath(info.filename).parts) + "/" * info.is_dir()] = info
    return by_name


def _regular_members(
    plan: dict[str, str], by_name: dict[str, zipfile.ZipInfo], skipped: list[dict], shown: str
) -> dict[str, zipfile.ZipInfo]:
    """The entries of the planned files; one that is not a regular file (a link, a device) is
    skipped, reported and removed from `plan`."""
    members = {}
    for name in list(plan):
        if name.startswith("<dir>"):
            continue
        info = by_name[name]
        why = zip_entry_skip_reason(info)
        if why:
            report_skipped(skipped, f"{shown}/{name}", name, why)
            del plan[name]
        else:
            members[name] = info
    return members


def download_url(url: str, dest: Path, timeout: float = 30.0, what: str = "the source") -> None:
    """Stream url into dest with a progress bar; refuse anything that is not a zip."""
    import requests
    from tqdm import tqdm

    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            resp.raise_for_status()
            ctype = resp.headers.get("Content-Type", "")
            total = int(resp.headers.get("Content-Length") or 0) or None
            if total:
                check_free_space(dest, total, f"the zip at {url}")
            with (
                open(dest, "wb") as fout,
                tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=None) as bar,
            ):
                for chunk in resp.iter_content(1 << 20):
                    fout.write(chunk)
                    bar.update(len(chunk))
    except requests.exceptions.RequestException as exc:
        # A stall mid-body surfaces as a ConnectionError wrapping urllib3's ReadTimeoutError.
        if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
            raise LungdxError(
                f"{what} URL {url} timed out (nothing received for {timeout:g} s); check "
                f"the address, or download the zip by hand and set {what} to its path"
            ) from exc
        raise LungdxError(
            f"{what} URL {url} could not be downloaded: {exc}; download the zip by hand and set {what} to its path"
        ) from exc
    with open(dest, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise LungdxError(
            f"{what} URL {url} did not return a zip file (Content-Type {ctype or 'unknown'}, "
            f"starts with {magic!r}); use the direct link to the .zip"
        )


def kaggle_download(handle: str, version: int | None, what: str = "the source") -> Path:
    """kagglehub's cached download. A failure of the network or of the credentials becomes one
    message with the two ways out; kagglehub missing says to install it; anything else is a bug
    and keeps its traceback."""
    spec = f"{handle}/versions/{version}" if version else handle
    try:
        import kagglehub
        import kagglehub.exceptions as kaggle_errors
        import requests
    except ImportError as exc:
        raise LungdxError(
            f"a Kaggle download needs kagglehub, which cannot be imported ({exc}); install the "
            "pinned versions: pip install -r requirements.txt"
        ) from exc
    # What a download from Kaggle raises when the network, the login or the dataset is the matter;
    # ValueError: a malformed handle or version, or a broken credentials file (kaggle.json).
    failures = (
        ValueError,
        requests.exceptions.RequestException,
        OSError,
        kaggle_errors.KaggleApiHTTPError,
        kaggle_errors.CredentialError,
        kaggle_errors.UnauthenticatedError,
        kaggle_errors.NotFoundError,
        kaggle_errors.BackendError,
        kaggle_errors.DataCorruptionError,
    )
    try:
        return Path(kagglehub.dataset_download(spec))
    except failures as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk, not the network: the stage runner says so and what to free
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise LungdxError(
            f"Kaggle download of '{spec}' failed ({type(exc).__name__}: {first}). "
            "Two ways out: (1) set KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY) if the network is "
            "up and the dataset needs a login; (2) download the zip by hand from "
            f"https://www.kaggle.com/datasets/{handle} and set {what} to its path"
        ) from exc


def bring_in(
    source: Source,
    out_dir: Path,
    skipped: list[dict],
    *,
    what: str,
    kaggle_version: int | None = None,
    url_timeout: float = 30.0,
    zip_limits: ZipLimits = ZIP_LIMITS,
    space_at: str | Path | None = None,
) -> int:
    """Copy a folder, zip, URL or Kaggle source's class images and masks into out_dir in the raw
    layout; returns how many files; what is not taken is appended to `skipped`. `what` names the
    setting or argument that gave the source, in messages."""
    if source.kind == "kaggle":
        folder = kaggle_download(source.location, kaggle_version, what)
        return import_folder(folder, out_dir, skipped, space_at=space_at, what=what)
    if source.kind == "folder":
        return import_folder(Path(source.location), out_dir, skipped, space_at=space_at, what=what)
    if source.kind == "zip":
        return import_zip(Path(source.location), out_dir, skipped, zip_limits, space_at=space_at, what=what)
    if source.kind == "url":
        archive = out_dir / ".download.zip"
        download_url(source.location, archive, url_timeout, what)
        n = import_zip(archive, out_dir, skipped, zip_limits, shown=source.location, space_at=space_at, what=what)
        archive.unlink()
        return n
    raise ValueError(f"bring_in takes a folder, zip, url or kaggle source, not {source.kind}")


OTHER_FORMS = "a local folder, a local .zip, an http(s) URL of a .zip, or kaggle:<owner>/<dataset>"


def bring_in_dataset(
    source: str, raw_dir: Path, what: str, project_root: str | Path | None = None, *, reader: str
) -> list[str]:
    """`source` (a local folder or .zip, an http(s) URL of a .zip, or kaggle:<owner>/<dataset>)
    into raw_dir in the raw layout, with the download stage's checks; returns its classes.
    `what` names the source in messages (the setting or argument that gave it), `reader`
    what reads it (the external check, the segment stage)."""
    value = source.strip() if isinstance(source, str) else source
    handle = value[len("kaggle:") :] if isinstance(value, str) and value.startswith("kaggle:") else None
    if (
        not isinstance(value, str)
        or value in ("", "synthetic", "kaggle")
        or (handle is not None and (handle.count("/") != 1 or not all(handle.split("/"))))
    ):
        raise LungdxError(f"{what} = {source!r} is not allowed: {OTHER_FORMS}")
    found = resolve_source("kaggle" if handle else value, handle, what, OTHER_FORMS)
    if found.kind in ("folder", "zip"):
        check_source_location(
            found.location, value, Path.cwd() if project_root is None else project_root, raw_dir, what, reader=reader
        )
    raw_dir.mkdir(parents=True)
    bring_in(found, raw_dir, [], what=what, space_at=raw_dir)  # each file not taken is logged as a warning
    return sorted(p.name for p in raw_dir.iterdir() if p.is_dir())
