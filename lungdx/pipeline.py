"""What this project's dvc.yaml declares, read by the stages themselves.

The download stage refuses a source inside a pipeline output (lungdx.source_checks), and the
stage runner names a stage's outputs when it stops early (lungdx.runner).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LungdxError


def pipeline_outputs(project_root: str | Path) -> list[tuple[str, str]]:
    """(stage, output path relative to project_root) for every output dvc.yaml there declares.

    Reads each stage's `outs`, `metrics` and `plots` (entries are strings or one-key mappings
    such as `- data/raw: {persist: true}`), relative to the stage's `wdir`. Entries with
    `${...}` interpolation cannot be resolved here and are left out. No dvc.yaml: [].
    """
    import yaml

    path = Path(project_root) / "dvc.yaml"
    if not path.is_file():
        return []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LungdxError(f"{path}: cannot be read ({first}); fix it (dvc would refuse it too)") from exc
    stages = doc.get("stages") if isinstance(doc, dict) else None
    found = []
    for name, body in (stages or {}).items() if isinstance(stages, dict) else ():
        for stage, key, instance in _instances(Path(project_root), str(name), body):
            given = instance.get("wdir")
            wdir = given if isinstance(given, str) else "."
            for group in ("outs", "metrics", "plots"):
                entries = instance.get(group)
                for entry in entries if isinstance(entries, list) else ():
                    if isinstance(entry, dict) and len(entry) == 1:
                        entry = next(iter(entry))
                    if isinstance(entry, str) and key is not None:
                        entry = entry.replace("${key}", key)
                    if isinstance(entry, str) and entry.strip() and "${" not in entry and "${" not in wdir:
                        found.append((stage, os.path.normpath(os.path.join(wdir, entry.strip()))))
    return found


def _instances(root: Path, name: str, body) -> list[tuple[str, str | None, dict]]:
    """(stage name, foreach key, body) of a stage: itself, or one per key of a foreach over a
    params.yaml mapping (`foreach: ${external}` -> external@<key>); none for what cannot be read."""
    if not isinstance(body, dict):
        return []
    if not isinstance(body.get("do"), dict):
        return [(name, None, body)]
    source = body.get("foreach")
    items = None
    if isinstance(source, str) and source.startswith("${") and source.endswith("}"):
        from . import params

        try:
            items = params.read(root / params.PARAMS_FILE)
            for part in source[2:-1].split("."):
                items = items.get(part) if isinstance(items, dict) else None
        except LungdxError:  # no params.yaml, or not a mapping: the instances cannot be named
            items = None
    if not isinstance(items, dict):
        return [(name, None, body["do"])]  # entries with ${key} are left out
    return [(f"{name}@{key}", str(key), body["do"]) for key in items]
