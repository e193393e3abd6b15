"""The `download` stage: bring any supported source into one raw layout.

    data/raw/<Class>/images/<file>     every file of the class's image folder, byte for byte
    data/raw/<Class>/masks/<file>      lung masks, when the source has them (Kaggle does)
    data/raw/<Class>/lesions/<file>    lesion masks (synthetic data only)
    data/raw/source.json               where it came from

Sources (params `dataset.source`): `synthetic`, `kaggle`, a local folder, a local
`.zip`, or an http(s) URL of a `.zip`. Folders and zips may use the current
Kaggle layout (<Class>/images, <Class>/masks, maybe under one top folder with
metadata files beside the class folders) or the old flat one (<Class>/*.png).

The source is only ever read. Files are copied (not hard-linked) because DVC
may later make its cache files read-only, and a hard link would carry that
change back into the user's source folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import params as P
from .atomic import atomic_dir
from .errors import LungdxError, ParamError
from .images import IMAGE_SUFFIXES
from .synthetic import generate_dataset

SUBFOLDERS = ("images", "masks", "lesions")
SOURCE_FORMS = ("synthetic | kaggle | a path to a local folder | a path to a local .zip "
                "| an http(s) URL of a .zip")
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


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

def _usable(parts: tuple[str, ...]) -> bool:
    return not any(p.startswith(".") or p in IGNORED_NAMES for p in parts)


def plan_layout(files: list[str], dirs: list[str] = ()) -> dict[str, str]:
    """Map source-relative POSIX file paths to raw-layout paths (<Class>/<sub>/<name>).

    The class root is the shallowest folder with a child folder that either has an
    `images/` subfolder (Kaggle layout) or holds image files directly (flat layout).
    Every non-hidden child folder of the root is then a class, even an empty one,
    so a class with no usable image is reported by name later instead of vanishing.
    """
    entries = [PurePosixPath(f).parts for f in files]
    entries = [e for e in entries if e and _usable(e)]
    all_dirs = {PurePosixPath(d).parts for d in dirs if d and _usable(PurePosixPath(d).parts)}
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
    count = 0
    for src, rel in plan.items():
        if src.startswith("<dir>"):
            _safe_destination(out_dir, rel.rstrip("/")).mkdir(parents=True, exist_ok=True)
            continue
        dest = _safe_destination(out_dir, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        copy_one(src, dest)
        count += 1
    return count


def import_folder(src: Path, out_dir: Path) -> int:
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs += [rel + d for d in dirnames]
        files += [rel + f for f in filenames]
    plan = plan_layout(files, dirs)
    return _materialise(plan, out_dir, lambda s, d: shutil.copyfile(src / s, d))


def import_zip(path: Path, out_dir: Path) -> int:
    """Extract only the class images and masks of a zip, straight into the raw layout."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            skipped = [n for n in names if n.startswith("/") or ".." in PurePosixPath(n).parts]
            for n in skipped:
                print(f"warning: {path}: skipping unsafe entry {n!r}", file=sys.stderr)
            names = [n for n in names if n not in skipped]
            plan = plan_layout([n for n in names if not n.endswith("/")], [n.rstrip("/") for n in names if n.endswith("/")])

            def copy_one(member, dest):
                with zf.open(member) as fin, open(dest, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)

            return _materialise(plan, out_dir, copy_one)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise LungdxError(f"{path}: not a valid zip file ({exc}); if it was downloaded, it may be "
                          "incomplete: download it again") from None
    except LungdxError as exc:
        raise LungdxError(f"{path}: {exc}") from None


def download_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Stream url into dest with a progress bar; refuse anything that is not a zip."""
    import requests
    from tqdm import tqdm

    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            resp.raise_for_status()
            ctype = resp.headers.get("Content-Type", "")
            total = int(resp.headers.get("Content-Length") or 0) or None
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


def download(params: dict, out_dir: str | Path = "data/raw", progress=None, url_timeout: float = 30.0) -> dict:
    """Run the download stage; returns the provenance record also written to source.json.

    `url_timeout`: seconds a URL source may stay silent (connecting, or between two chunks).
    """
    source = resolve_source(params)
    seed = P.integer(params, "seed", minimum=0)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if source.kind == "synthetic":
            per_class = P.integer(params, "dataset.synthetic.per_class", minimum=1)
            size = P.integer(params, "dataset.synthetic.image_size", minimum=32, default=256)
            generate_dataset(tmp, per_class, seed, size, progress=progress)
            n = per_class * 4 * 3
        elif source.kind == "kaggle":
            version = P.get(params, "dataset.kaggle_version", default=None)
            n = import_folder(kaggle_download(source.location, version), tmp)
        elif source.kind == "folder":
            n = import_folder(Path(source.location), tmp)
        elif source.kind == "zip":
            n = import_zip(Path(source.location), tmp)
        else:
            archive = tmp / ".download.zip"
            download_url(source.location, archive, url_timeout)
            n = import_zip(archive, tmp)
            archive.unlink()
        classes = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        record = {"kind": source.kind, "location": source.location, "files": n, "classes": classes}
        if source.kind == "synthetic":
            record["seed"] = seed
        (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
