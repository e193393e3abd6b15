"""The stage runner: how every stage script starts and ends.

Kept apart from the command line (lungdx.cli, which imports predict and through it the
model and Grad-CAM code), so a stage's import graph -- and so its code deps in dvc.yaml,
see lungdx.stage_deps -- is only what the stage runs.
"""

from __future__ import annotations

import functools
import os
import sys

from .errors import LungdxError


def progress(iterable, total=None, desc=None):
    """A tqdm bar on stderr, quiet in CI logs (LUNGDX_PROGRESS=0 turns it off)."""
    from tqdm import tqdm

    disable = os.environ.get("LUNGDX_PROGRESS", "1") == "0" or None
    return tqdm(iterable, total=total, desc=desc, mininterval=1.0, disable=disable, file=sys.stderr)


def stage(main):
    """Run a stage's main(); a LungdxError ends it with one readable line and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except LungdxError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; outputs of this stage were left as they were", file=sys.stderr)
            sys.exit(130)

    return wrapper
