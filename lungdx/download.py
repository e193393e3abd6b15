"""The `download` stage: bring dataset.source into one raw layout (lungdx.raw).

    data/raw/<Class>/images/<file>     every file of the class's image folder, byte for byte
    data/raw/<Class>/masks/<file>      lung masks, when the source has them (Kaggle does)
    data/raw/<Class>/lesions/<file>    lesion masks (synthetic data only)
    data/raw/source.json               where it came from: kind, location, files, classes, and
                                       "skipped": [{"path", "reason"}], every file of the source
                                       not taken, its path relative to the source (for a zip:
                                       the entry's name); the sample stage lists them in
                                       data/sampled/skipped.csv as "source:<path>"

Sources (params `dataset.source`): `synthetic` (lungdx.synthetic), or what lungdx.sources
reads: `kaggle`, a local folder, a local `.zip`, or an http(s) URL of a `.zip`. A source
inside the project is refused (lungdx.source_checks.check_source_location).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_dir
from .source_checks import ZIP_LIMITS, ZipLimits, check_source_location
from .sources import Source, bring_in, resolve_source
from .synthetic import generate_dataset

if TYPE_CHECKING:
    from .params import DownloadSettings
    from .workers import Progress


def download(
    settings: DownloadSettings,
    out_dir: str | Path,
    progress: Progress | None = None,
    url_timeout: float = 30.0,
    project_root: str | Path | None = None,
    zip_limits: ZipLimits = ZIP_LIMITS,
) -> dict:
    """The download stage: the source into out_dir; returns
    the provenance record also written to source.json.

    `url_timeout`: seconds a URL source may stay silent (connecting, or between two chunks).
    `project_root`: where dvc.yaml is, to refuse a source inside the pipeline's own outputs
    (check_source_location); default the working directory, where stages run.
    `zip_limits`: what a zip source may declare (ZipLimits).
    """
    what = f"params.yaml: {settings.key('source')}"
    source = resolve_source(settings.source, settings.kaggle_handle, what)
    out_dir = Path(out_dir)
    _check_location(source, settings, project_root, out_dir)
    skipped: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        if source.kind == "synthetic":
            n = generate_dataset(
                tmp, settings.synthetic_per_class, settings.seed, settings.synthetic_image_size, progress=progress
            )
        else:
            n = bring_in(
                source,
                tmp,
                skipped,
                what=settings.key("source"),
                kaggle_version=settings.kaggle_version,
                url_timeout=url_timeout,
                zip_limits=zip_limits,
                space_at=out_dir,
            )
        record = _record(source, n, tmp, skipped, settings)
        (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _check_location(source: Source, settings: DownloadSettings, project_root: str | Path | None, out_dir: Path) -> None:
    """Refuse a folder or zip source where the pipeline would destroy or re-read it
    (check_source_location); `project_root` None: the working directory."""
    if source.kind in ("folder", "zip"):
        check_source_location(
            source.location,
            settings.source,
            Path.cwd() if project_root is None else project_root,
            out_dir,
            settings.key("source"),
        )


def _record(source: Source, n: int, raw_dir: Path, skipped: list[dict], settings: DownloadSettings) -> dict:
    """source.json's provenance record of the `n` files brought into raw_dir."""
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir())
    record = {
        "kind": source.kind,
        "location": source.location,
        "files": n,
        "classes": classes,
        "skipped": sorted(skipped, key=lambda s: s["path"]),
    }
    if source.kind == "synthetic":
        record["seed"] = settings.seed
    return record
