"""What a person sees on the terminal, in one place: log lines, progress bars, a quiet TensorFlow.

Log lines: library modules log with logging.getLogger(__name__); configure_logging makes the
`lungdx` logger write one line per record to stderr, prefixed as people and tests read them:
`note: ...` (info), `warning: ...`, `error: ...`, and `debug: ...` when verbose.

Verbose shows debug lines and TensorFlow's own start-up and C++ log lines. The command line
takes -v/--verbose; stages run by `dvc repro`, which cannot pass them flags, so for them (and
everywhere) the environment variable LUNGDX_VERBOSE=1 turns it on.

Progress bars: progress() draws tqdm bars on stderr; LUNGDX_PROGRESS=0 (what `lungdx -q` sets)
turns them off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import LungdxError

if TYPE_CHECKING:
    from collections.abc import Iterable

T = TypeVar("T")

PREFIXES = {
    logging.DEBUG: "debug",
    logging.INFO: "note",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}

_verbose = False
_tensorflow = None


class _StderrLines(logging.Handler):
    """`<prefix>: <message>` on sys.stderr as it is at each record (tests capture it by swapping it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            # tqdm.write: a line printed while a bar is drawn must not break the bar in two
            tqdm.write(f"{PREFIXES.get(record.levelno, 'note')}: {record.getMessage()}", file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(verbose: bool = False) -> None:
    """Send the `lungdx` logger's records to stderr as prefixed lines; verbose (or LUNGDX_VERBOSE=1)
    adds debug lines and TensorFlow's own. Calling it again replaces the earlier settings."""
    global _verbose
    _verbose = verbose or os.environ.get("LUNGDX_VERBOSE") == "1"
    if _verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # read when TensorFlow is imported
    logger = logging.getLogger("lungdx")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrLines)]:
        logger.removeHandler(handler)
    logger.addHandler(_StderrLines())
    logger.setLevel(logging.DEBUG if _verbose else logging.INFO)
    logger.propagate = False  # a root handler set up by someone else would print every line twice


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None) -> Iterable[T]:
    """A tqdm bar on stderr, quiet in CI logs (LUNGDX_PROGRESS=0 turns it off)."""
    from tqdm import tqdm

    # True: off; None: tqdm's own choice, off when stderr is not a terminal (CI logs, files)
    disable = True if os.environ.get("LUNGDX_PROGRESS", "1") == "0" else None
    return tqdm(iterable, total=total, desc=desc, mininterval=1.0, disable=disable, file=sys.stderr)


@contextlib.contextmanager
def _stderr_fd_captured():
    """File descriptor 2 (C and C++ code write there, not to sys.stderr) into a temporary file,
    then back; yields that file, so what was hidden can be shown if something goes wrong."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    try:
        os.dup2(captured.fileno(), 2)
        yield captured
    finally:
        sys.stderr.flush()  # what Python wrote meanwhile belongs to the hidden part
        os.dup2(saved, 2)
        os.close(saved)


def _hidden_text(captured) -> str:
    captured.seek(0)
    return captured.read().decode(errors="replace").strip()


tensorflow_start_seconds = 0.0  # how long import_tensorflow took in this process (0: not called)


def import_tensorflow() -> Any:
    """The tensorflow module, imported with its devices ready; call it before the first
    `import keras` or `import tensorflow` of a run.

    TensorFlow 2.21 writes its C++ start-up lines (CUDA probes, CPU feature notes) before its
    logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence them. They come while it is
    imported and while its devices are first set up, so stderr's file descriptor points to a
    temporary file for exactly that time. If the start-up fails with a Python exception, what it
    wrote there is shown, then a LungdxError says what failed. A crash that ends the process
    (an abort for a CPU without AVX, a segfault) cannot be shown: LUNGDX_VERBOSE=1 (or lungdx -v)
    hides nothing. Verbose: nothing is hidden.
    """
    global _tensorflow, tensorflow_start_seconds
    if _tensorflow is None:
        start = time.perf_counter()
        tf, devices = _start_tensorflow()
        _tensorflow = tf
        tensorflow_start_seconds = time.perf_counter() - start
        logging.getLogger(__name__).debug(
            f"TensorFlow {tf.__version__} ready in {tensorflow_start_seconds:.1f} s on "
            + ", ".join(d.name.removeprefix("/physical_device:") for d in devices)
        )
    return _tensorflow


def _start_tensorflow() -> tuple[Any, list]:
    """(tensorflow, its physical devices), its start-up lines hidden unless verbose; if it fails,
    what it wrote is shown and a LungdxError says what failed."""
    with contextlib.nullcontext() if _verbose else _stderr_fd_captured() as captured:
        try:
            # TensorFlow's BFC allocator on the CPU keeps the memory it frees for the next
            # batch; the default returned it to the system, and touching it again page-faulted
            # (a third of the default CNN's training time was system time: docs/performance.md).
            os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
            import tensorflow as tf

            devices = tf.config.list_physical_devices()
            tf.constant(0)  # the first op sets the devices up: the second burst of lines
            failure = None
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
            failure = exc
    if failure is not None:
        hidden = _hidden_text(captured) if captured is not None else ""
        if hidden:
            print(hidden, file=sys.stderr)
        raise LungdxError(
            f"TensorFlow could not start ({type(failure).__name__}: {failure}); reinstall the "
            "pinned versions (pip install -e .); LUNGDX_VERBOSE=1 (or lungdx -v) shows all of "
            "its messages"
        ) from failure
    return tf, devices
