"""Running one function over many jobs in worker processes, and stopping cleanly.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group: without care each
worker prints its own KeyboardInterrupt traceback. Workers ignore SIGINT; the parent alone stops,
cancels what has not started and waits for the few running jobs, so its atomic outputs can
remove their temporaries before the stage prints its one line (lungdx.runner).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")
# How a stage shows its progress (lungdx.console.progress): progress(iterable, total=, desc=), an
# iterable of the same items; a stage called without one shows none.
Progress = Callable[..., Iterable[Any]]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_in_workers(fn: Callable[[Job], Result], jobs: list[Job], workers: int, chunksize: int = 1) -> Iterator[Result]:
    """fn over jobs, results in order; in `workers` processes, or in this one when workers is 1."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    pool = ProcessPoolExecutor(workers, initializer=_ignore_interrupts)
    try:
        yield from pool.map(fn, jobs, chunksize=chunksize)
    finally:
        pool.shutdown(cancel_futures=True)
