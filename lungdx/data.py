"""The `download` stage: bring any supported source into one raw layout.

    data/raw/<Class>/images/<file>     every file of the class's image folder, byte for byte
    data/raw/<Class>/masks/<file>      lung masks, when the source has them (Kaggle does)
    data/raw/<Class>/lesions/<file>    lesion masks (synthetic data only)
    data/raw/source.json               where it came from: kind, location, files, classes, and
                                       "skipped": [{"path", "reason"}], every file of the source
                                       not taken, its path relative to the source (for a zip:
                                       the entry's name); the sample stage lists them in
                                       data/sampled/skipped.csv as "source:<path>"

Sources (params `dataset.source`): `synthetic`, `kaggle`, a local folder, a local
`.zip`, or an http(s) URL of a `.zip`. Folders and zips may use the current
Kaggle layout (<Class>/images, <Class>/masks, maybe under one top folder with
metadata files beside the class folders) or the old flat one (<Class>/*.png).

The source is only ever read. Files are copied (not hard-linked) because DVC
may later make its cache files read-only, and a hard link would carry that
change back into the user's source folder.

Careless and hostile sources (a source inside the project, links, pipes, zip bombs) are
refused or skipped by lungdx.source_checks; one class folder of the Kaggle layout given as
the source is refused by plan_layout.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import params as P
from .atomic import atomic_dir, check_free_space
from .errors import DiskFull, LungdxError, ParamError
from .images import IMAGE_SUFFIXES
from .source_checks import (DIRECTORY, ZIP_LIMITS, SourceError, ZipLimits, check_entry_count,
                            check_source_location, check_zip_limits, copy_at_most, file_kind, open_inside,
                            regular_file_in, report_skipped, unsafe_name, usable, walk_source,
                            zip_entry_skip_reason)
from .synthetic import generate_dataset

SUBFOLDERS = ("images", "masks", "lesions")
SOURCE_FORMS = ("synthetic | kaggle | a path to a local folder | a path to a local .zip "
                "| an http(s) URL of a .zip")


@dataclass(frozen=True)
class Source:
    kind: str        # synthetic | kaggle | folder | zip | url
    location: str    # path, URL or Kaggle handle


def resolve_source(params: dict) -> Source:
    """Classify dataset.source; fails before any work on a form we do not know."""
    value = P.get(params, "dataset.source")
    if not isinstance(value, str) or not value.strip():
        raise ParamError("dataset.source", value, SOURCE_FORMS)
    value = value.strip()
    if value in ("synthetic", "kaggle"):
        handle = P.get(params, "dataset.kaggle_handle") if value == "kaggle" else "synthetic"
        return Source(value, handle)
    if value.startswith(("http://", "https://")):
        return Source("url", value)
    if "://" in value:
        raise ParamError("dataset.source", value, SOURCE_FORMS + " (only http and https URLs are supported)")
    path = Path(value).expanduser()
    if path.is_dir():
        return Source("folder", str(path))
    if path.is_file():
        if zipfile.is_zipfile(path) or path.suffix.lower() == ".zip":
            return Source("zip", str(path))
        raise ParamError("dataset.source", value, "a folder or a .zip file; this file is neither")
    raise ParamError("dataset.source", value, f"{SOURCE_FORMS}; no file or folder exists at {path.resolve()}")


# --- layout detection, shared by folders and zips ---------------------------------------

def plan_layout(files: list[str], dirs: list[str] = (), where: str = "the source") -> dict[str, str]:
    """Map source-relative POSIX file paths to raw-layout paths (<Class>/<sub>/<name>).

    The class root is the shallowest folder with a child folder that either has an
    `images/` subfolder (Kaggle layout) or holds image files directly (flat layout).
    Every non-hidden child folder of the root is then a class, even an empty one,
    so a class with no usable image is reported by name later instead of vanishing.
    Classes that are all images/, masks/ or lesions/ mean the source is one class folder
    of the Kaggle layout: refused (SourceError naming `where`, the source as the user gave it).
    """
    entries = [PurePosixPath(f).parts for f in files]
    entries = [e for e in entries if e and usable(e)]
    all_dirs = {PurePosixPath(d).parts for d in dirs if d and usable(PurePosixPath(d).parts)}
    for e in entries:
        all_dirs.update(e[:i] for i in range(1, len(e)))

    def is_class(d):
        n = len(d)
        return any(e[:n] == d and ((len(e) == n + 1 and PurePosixPath(e[-1]).suffix.lower() in IMAGE_SUFFIXES)
                                   or (len(e) == n + 2 and e[n] == "images")) for e in entries)

    roots = sorted({d[:-1] for d in all_dirs if is_class(d)}, key=lambda r: (len(r), r))
    if not roots:
        raise LungdxError("no class folders found: expected <Class>/images/*.png (Kaggle layout) "
                          "or <Class>/*.png (flat layout), maybe under one top folder")
    root = roots[0]
    n = len(root)
    classes = sorted({d[n] for d in all_dirs if len(d) == n + 1 and d[:n] == root})
    if set(classes) <= set(SUBFOLDERS):
        held = [f"{c}/" for c in classes]
        held = " and ".join([", ".join(held[:-1]), held[-1]] if len(held) > 1 else held)
        folder = where + "".join(f"/{part}" for part in root)
        raise SourceError(f"{folder} looks like one class folder of the Kaggle layout (it holds {held}); point "
                          "dataset.source at the folder that holds the class folders (COVID/, Normal/, ...)")
    plan = {}
    for e in entries:
        if e[:n] != root or len(e) < n + 2 or e[n] not in classes:
            continue
        cls, rest = e[n], e[n + 1:]
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


def _materialise(plan: dict[str, str], out_dir: Path, copy_one) -> int:
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


def import_folder(src: Path, out_dir: Path, skipped: list[dict] | None = None,
                  space_at: str | Path | None = None) -> int:
    """Copy the class images and masks of a folder into the raw layout; returns the count.

    Only regular files that resolve inside the source are read (see regular_file_in and
    open_inside); every other planned file is skipped, reported and appended to `skipped`.
    The total is checked against the free space at `space_at` (default out_dir) first.
    """
    skipped = [] if skipped is None else skipped
    shown = str(src).rstrip("/") or "/"
    root = Path(src).resolve()
    files, dirs = walk_source(root, skipped, shown)
    for name in [f for f in files if unsafe_name(f)]:  # a backslash is legal in a Linux file name
        report_skipped(skipped, f"{shown}/{name}", name, "unsafe name (with a backslash), not copied")
        files.remove(name)
    try:
        plan = plan_layout(files, dirs, where=shown)
    except SourceError:
        raise
    except LungdxError as exc:
        raise SourceError(f"{shown}: {exc}") from None
    where, total = {}, 0
    for name, rel in list(plan.items()):
        if name.startswith("<dir>"):
            continue
        found = regular_file_in(root, name)
        if isinstance(found, str):
            report_skipped(skipped, f"{shown}/{name}", name, found)
            del plan[name]
        else:
            where[name] = found
            total += found[1]
    check_free_space(space_at or out_dir, total, f"the {len(where):,} files of {shown}")

    root_fd = os.open(root, os.O_RDONLY | DIRECTORY)
    try:
        def copy_one(name, dest):
            parts, size = where[name]
            try:
                fd = open_inside(root_fd, parts)
            except OSError as exc:
                reason = ("changed while being copied: a symbolic link appeared on its path"
                          if exc.errno in (errno.ELOOP, errno.ENOTDIR) else f"could not be read ({exc.strerror})")
                report_skipped(skipped, f"{shown}/{name}", name, reason)
                return False
            with os.fdopen(fd, "rb", buffering=0) as fin:
                mode = os.fstat(fin.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    report_skipped(skipped, f"{shown}/{name}", name,
                          f"changed while being copied: now a {file_kind(mode)}, not a regular file")
                    return False
                with open(dest, "wb") as fout:  # never more than it had when checked: a file
                    copy_at_most(fin, fout, size)  # growing meanwhile cannot fill the disk
            return True

        return _materialise(plan, out_dir, copy_one)
    finally:
        os.close(root_fd)


def import_zip(path: Path, out_dir: Path, skipped: list[dict] | None = None, limits: ZipLimits = ZIP_LIMITS,
               shown: str | None = None, space_at: str | Path | None = None) -> int:
    """Extract only the class images and masks of a zip, straight into the raw layout.

    `shown` names the zip in messages (the URL for a downloaded one). Unsafe names, symbolic
    links and special files are skipped, reported and appended to `skipped`; then the entries
    to extract are checked (check_zip_limits) before any is; none is written past its size.
    """
    skipped = [] if skipped is None else skipped
    shown = shown or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            check_entry_count(shown, len(infos), limits)
            # plan_layout tidies names ('./A/x', 'top//A/x'); look entries up by the tidy name.
            by_name = {}
            for info in infos:
                if unsafe_name(info.filename):
                    report_skipped(skipped, f"{shown}/{info.filename}", info.filename,
                                   "unsafe name (absolute, with .. or a backslash), never extracted")
                else:
                    by_name["/".join(PurePosixPath(info.filename).parts) + "/" * info.is_dir()] = info
            names = list(by_name)
            plan = plan_layout([n for n in names if not n.endswith("/")],
                               [n.rstrip("/") for n in names if n.endswith("/")], where=shown)
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
            check_zip_limits(shown, os.path.getsize(path), list(members.values()), limits, space_at or out_dir)

            def copy_one(name, dest):
                with zf.open(members[name]) as fin, open(dest, "wb") as fout:
                    copy_at_most(fin, fout, members[name].file_size)  # zipfile stops there too
                return True

            return _materialise(plan, out_dir, copy_one)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise LungdxError(f"{shown}: not a valid zip file ({exc}); if it was downloaded, it may be "
                          "incomplete: download it again") from None
    except NotImplementedError as exc:  # e.g. Deflate64, which Windows uses for zips over 2 GB
        raise LungdxError(f"{shown}: cannot be extracted here ({exc}); unpack it with another tool and point "
                          "dataset.source at the folder") from None
    except (SourceError, DiskFull):
        raise
    except LungdxError as exc:
        raise LungdxError(f"{shown}: {exc}") from None


def download_url(url: str, dest: Path, timeout: float = 30.0) -> None:
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
            with open(dest, "wb") as fout, tqdm(total=total, unit="B", unit_scale=True, desc="download",
                                                 disable=None) as bar:
                for chunk in resp.iter_content(1 << 20):
                    fout.write(chunk)
                    bar.update(len(chunk))
    except requests.exceptions.RequestException as exc:
        # A stall mid-body surfaces as a ConnectionError wrapping urllib3's ReadTimeoutError.
        if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
            raise LungdxError(f"dataset.source URL {url} timed out (nothing received for {timeout:g} s); check "
                              "the address, or download the zip by hand and set dataset.source to its path") from None
        raise LungdxError(f"dataset.source URL {url} could not be downloaded: {exc}; download the zip "
                          "by hand and set dataset.source to its path") from None
    with open(dest, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise LungdxError(f"dataset.source URL {url} did not return a zip file (Content-Type {ctype or 'unknown'}, "
                          f"starts with {magic!r}); use the direct link to the .zip")


def kaggle_download(handle: str, version) -> Path:
    """kagglehub's cached download; any failure becomes one message with the two ways out."""
    spec = f"{handle}/versions/{version}" if version else handle
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(spec))
    except Exception as exc:  # kagglehub raises many kinds (HTTP, auth, timeouts); all mean the same here
        raise LungdxError(
            f"Kaggle download of '{spec}' failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Two ways out: (1) set KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY) if the network is "
            "up and the dataset needs a login; (2) download the zip by hand from "
            f"https://www.kaggle.com/datasets/{handle} and run: dvc exp run -S dataset.source=/path/to/archive.zip"
        ) from None


def download(params: dict, out_dir: str | Path = "data/raw", progress=None, url_timeout: float = 30.0,
             project_root: str | Path | None = None, zip_limits: ZipLimits = ZIP_LIMITS) -> dict:
    """Run the download stage; returns the provenance record also written to source.json.

    `url_timeout`: seconds a URL source may stay silent (connecting, or between two chunks).
    `project_root`: where dvc.yaml is, to refuse a source inside the pipeline's own outputs
    (check_source_location); default the working directory, where stages run.
    `zip_limits`: what a zip source may declare (ZipLimits).
    """
    source = resolve_source(params)
    seed = P.integer(params, "seed", minimum=0)
    out_dir = Path(out_dir)
    if source.kind in ("folder", "zip"):
        check_source_location(source.location, P.get(params, "dataset.source").strip(),
                              Path.cwd() if project_root is None else project_root, out_dir)
    skipped: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        if source.kind == "synthetic":
            per_class = P.integer(params, "dataset.synthetic.per_class", minimum=1)
            size = P.integer(params, "dataset.synthetic.image_size", minimum=32, default=256)
            generate_dataset(tmp, per_class, seed, size, progress=progress)
            n = per_class * 4 * 3
        elif source.kind == "kaggle":
            version = P.get(params, "dataset.kaggle_version", default=None)
            n = import_folder(kaggle_download(source.location, version), tmp, skipped, space_at=out_dir)
        elif source.kind == "folder":
            n = import_folder(Path(source.location), tmp, skipped, space_at=out_dir)
        elif source.kind == "zip":
            n = import_zip(Path(source.location), tmp, skipped, zip_limits, space_at=out_dir)
        else:
            archive = tmp / ".download.zip"
            download_url(source.location, archive, url_timeout)
            n = import_zip(archive, tmp, skipped, zip_limits, shown=source.location, space_at=out_dir)
            archive.unlink()
        classes = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        record = {"kind": source.kind, "location": source.location, "files": n, "classes": classes,
                  "skipped": sorted(skipped, key=lambda s: s["path"])}
        if source.kind == "synthetic":
            record["seed"] = seed
        (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
