"""Atomic outputs: write beside the target, then rename.

A stage killed midway leaves at worst a hidden temporary file or folder, never
an artifact that looks complete. `os.replace` is atomic on POSIX within one
file system, which is why temporaries live next to their target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DiskFull

if TYPE_CHECKING:
    from collections.abc import Iterator


def current_umask() -> int:
    """The process's umask now. Linux shows it in /proc; elsewhere set-and-restore, which is
    only safe while no other thread creates files."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private temporaries (0600/0700); a renamed output gets the modes any
# other new file or folder would get under the umask in force, so a shared project stays readable.
def _file_mode() -> int:
    return 0o666 & ~current_umask()


def _dir_mode() -> int:
    return 0o777 & ~current_umask()


def _remove_leftovers(target: Path, patterns: tuple[str, ...]) -> None:
    """Temporaries of an earlier run of this target that was killed: they can never complete."""
    for pattern in patterns:
        for stale in target.parent.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def _naming(exc: OSError, target: Path) -> OSError:
    """exc, naming `target` when it names no file (a failed write() does not): a full disk is then
    reported as the output it stopped, not as a nameless error."""
    return exc if exc.filename or exc.errno is None else type(exc)(exc.errno, exc.strerror, str(target))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path next to `target`; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target, (f".{target.name}.*.tmp{suffix}",))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.fchmod(fd, _file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise _naming(exc, target) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to `target`; it replaces `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target, (f".{target.name}.*.tmp", f".{target.name}.old-*"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(_dir_mode())
    try:
        yield tmp
        if target.exists():
            # Move the old folder aside first so the swap is two renames, not a slow delete
            # that a crash could interrupt halfway.
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        raise _naming(exc, target) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_free_space(target: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse before writing `needed` bytes at `target` when its file system has less free.

    A stage that runs out of space midway is still answered (lungdx.runner turns ENOSPC into
    one line); this check only says it earlier, with both numbers, before any work is lost.
    """
    folder = Path(target).absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskFull(
            f"no space left for {what} at {target}: it needs about {human_bytes(needed)}, "
            f"{human_bytes(free)} is free there; free some space (or move the project) and run again"
        )


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: object) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")
