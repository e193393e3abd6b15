"""The stage runner: how every stage script starts and ends.

Kept apart from the command line (lungdx.cli, which imports predict and through it the
model and Grad-CAM code), so a stage's import graph -- and so its code deps in dvc.yaml,
see lungdx.stage_deps -- is only what the stage runs.

A stage ends in one line whatever stops it: a LungdxError (bad input: exit 2), a full disk
(exit 2) or Ctrl-C (exit 130). Before the line, the outputs this run wrote (its `outs` in
dvc.yaml that changed since it started: a stage with several outputs may have finished some)
are removed, so nothing of a failed run looks complete and the line can say truthfully what
is left. A second Ctrl-C is ignored until then: it would cut that cleanup short.

Before the stage runs, logging is set up (lungdx.console): dvc repro passes no flags, so
LUNGDX_VERBOSE=1 in the environment is how a stage shows debug lines and TensorFlow's own.

With LUNGDX_TIMINGS=<file> in the environment, a stage that succeeds appends one JSON line to
that file: its name, wall seconds of main() and of the whole process so far (imports
included), the seconds TensorFlow took to start (0 if it did not),
and the peak resident memory of the process and of the largest of its finished children
(its worker processes). The benchmarks read
it to break a `dvc exp run` down by stage (docs/performance.md).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import resource
import shutil
import signal
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

from . import console
from .atomic import human_bytes
from .console import configure_logging
from .errors import DiskFull, LungdxError
from .pipeline import pipeline_outputs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
P = ParamSpec("P")
R = TypeVar("R")


def stage_outputs(name: str) -> list[str]:
    """The outputs of stage `name` in ./dvc.yaml, of each of its instances for a foreach stage
    (name@key), ([] when it cannot be read)."""
    try:
        return [path for stage, path in pipeline_outputs(".") if stage.split("@")[0] == name]
    except LungdxError:
        return []


def _identity(path: str):
    """What tells this path's file or folder apart from one written later (None: absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _remove_this_runs(outputs: dict) -> None:
    """Remove the outputs that changed since the run started (`outputs`: path -> identity then)."""
    for path, before in outputs.items():
        if _identity(path) not in (None, before):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)


def outputs_now(outputs: Sequence[str]) -> str:
    """Which outputs exist, in words (run after _remove_this_runs: what exists is as before)."""
    present = [o for o in outputs if os.path.lexists(o)]
    absent = [o for o in outputs if o not in present]
    parts = ([f"as before this run: {', '.join(present)}"] if present else []) + (
        [f"absent: {', '.join(absent)}"] if absent else []
    )
    return "; ".join(parts) or "none declared"


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `exc`, following the chain libraries wrap it in."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        if "No space left on device" in str(exc):  # h5py and TensorFlow keep only the text
            return OSError(errno.ENOSPC, "No space left on device")
        exc = exc.__cause__ or exc.__context__
    return None


def _declared(filename: str | None, outputs: list[str]) -> str:
    """The output a failed write belongs to: an atomic temporary (.<name>.*) counts as its target."""
    if filename:
        path = Path(os.path.abspath(filename))
        for out in outputs:
            target = Path(os.path.abspath(out))
            if path.is_relative_to(target):
                return out
            if path.is_relative_to(target.parent) and path.relative_to(target.parent).parts[0].startswith(
                f".{target.name}."
            ):
                return out
        return filename
    return ", ".join(outputs) or "its outputs"


def disk_full_message(name: str, exc: OSError, outputs: list[str]) -> str:
    where = _declared(exc.filename, outputs)
    folder = Path(where.split(", ")[0]).absolute()
    while not folder.exists():
        folder = folder.parent
    free = human_bytes(shutil.disk_usage(folder).free)
    return (
        f"stage {name}: no space left on the device writing {where} ({free} free there now); "
        "free some space and run dvc repro again"
    )


def _interrupt_once(signum: int, frame: FrameType | None) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
    raise KeyboardInterrupt


def _process_seconds() -> float | None:
    """Seconds since this process started (its imports included), from /proc; None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)  # field 22: start time in clock ticks


def _record_timing(name: str, seconds: float) -> None:
    """One JSON line for LUNGDX_TIMINGS (module doc); nothing when it is not set."""
    path = os.environ.get("LUNGDX_TIMINGS")
    if not path:
        return
    rss = {
        who: round(resource.getrusage(who).ru_maxrss / 1024, 1)  # KiB on Linux
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    }
    line = {
        "stage": name,
        "seconds": round(seconds, 2),
        "process_seconds": _process_seconds(),
        "tensorflow_start_seconds": round(console.tensorflow_start_seconds, 2),
        "peak_rss_mb": rss[resource.RUSAGE_SELF],
        "workers_peak_rss_mb": rss[resource.RUSAGE_CHILDREN],
    }
    try:
        # Non-blocking, and only a regular file: a FIFO must not hold a finished stage. One short
        # O_APPEND write: whole lines even from stages running in parallel.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:  # the stage itself succeeded: a timing record must not fail it
        logging.getLogger(__name__).warning(
            f"LUNGDX_TIMINGS={path}: cannot append this stage's timing ({exc.strerror or exc})"
        )


def stage(main: Callable[P, R]) -> Callable[P, R]:
    """Run a stage's main(); any way it stops early ends in one readable line (see module doc)."""
    name = Path(main.__code__.co_filename).stem  # stages/<name>.py: the stage's name in dvc.yaml

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()  # verbose from LUNGDX_VERBOSE
        outputs = stage_outputs(name)
        before = {out: _identity(out) for out in outputs}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt_once)
        start = time.perf_counter()
        try:
            result = main(*args, **kwargs)
        except (KeyboardInterrupt, Exception) as exc:
            _remove_this_runs(before)
            _exit_stopped(name, exc, outputs)
            raise  # not a way a stage stops: a bug, with its traceback
        _record_timing(name, time.perf_counter() - start)  # after the try: its outputs are complete by now
        return result

    return wrapper


def _exit_stopped(name: str, exc: BaseException, outputs: list[str]) -> None:
    """The one line of stage `name` stopped by `exc` (this run's outputs removed), and its exit;
    returns for an exception that is none of the ways a stage stops."""
    if isinstance(exc, KeyboardInterrupt):
        print(
            f"interrupted: stage {name} stopped and kept nothing of this run; its outputs are "
            f"{outputs_now(outputs)}; run dvc repro to run it again",
            file=sys.stderr,
        )
        sys.exit(130)
    if isinstance(exc, DiskFull):
        print(f"error: stage {name}: {exc}. Nothing of this run was kept ({outputs_now(outputs)})", file=sys.stderr)
        sys.exit(2)
    if isinstance(exc, LungdxError):
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    cause = disk_full_cause(exc)
    if cause is not None:
        print(
            f"error: {disk_full_message(name, cause, outputs)}. Nothing of this run was kept ({outputs_now(outputs)})",
            file=sys.stderr,
        )
        sys.exit(2)
