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
        raise LungdxError(f"{path}: cannot be read ({first}); dataset.source cannot be checked against the "
                          "pipeline's outputs: fix dvc.yaml (dvc would refuse it too)") from None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    found = []
    for name, body in (stages or {}).items() if isinstance(stages, dict) else ():
        if isinstance(body, dict) and isinstance(body.get("do"), dict):  # foreach / matrix stages
            body = body["do"]
        if not isinstance(body, dict):
            continue
        wdir = body.get("wdir") if isinstance(body.get("wdir"), str) else "."
        for key in ("outs", "metrics", "plots"):
            entries = body.get(key)
            for entry in entries if isinstance(entries, list) else ():
                if isinstance(entry, dict) and len(entry) == 1:
                    entry = next(iter(entry))
                if isinstance(entry, str) and entry.strip() and "${" not in entry and "${" not in wdir:
                    found.append((str(name), os.path.normpath(os.path.join(wdir, entry.strip()))))
    return found
